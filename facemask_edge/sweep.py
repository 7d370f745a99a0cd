"""Sweep architecture x width x input size x colour (and backbone cuts), pick a model per board.

Each configuration is trained briefly, quantized (QAT, and PTQ to compare), converted and
profiled for every board by the pipeline itself (``until="profile"``) in
``OUT/configs/<name>/``, so an interrupted sweep continues where it stopped. Results go to
``OUT/sweep.json`` and ``OUT/sweep.md`` with two Pareto plots (int8 validation accuracy against
tensor arena and against estimated latency), and ``OUT/recommendation.json`` names, per board,
the most accurate configuration that fits the board's RAM and flash and its latency budget.

Choosing: candidates must fit (``profile``: arena with margin in RAM, model in flash), have a
latency estimate within the board's budget (upper end by default), and with ``reference`` stay
within the arena/flash ratios to it (issue 7's Nano 33 BLE targets). Among them the highest int8
accuracy on the
*validation* split wins (the test split stays untouched for reporting); configurations within
``tolerance`` of the best count as equal, and of those the smallest arena (then fewest MACs) is
taken.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from facemask_edge.boards import BOARDS, DEFAULTS_FILE
from facemask_edge.errors import FacemaskError
from facemask_edge.fmt import span
from facemask_edge.progress import log
from facemask_edge.train.qat import QAT_EPOCHS
from facemask_edge.train.trainer import TrainConfig

__all__ = ["SweepPoint", "build_grid", "run_sweep", "recommend", "write_defaults", "default_latency_budgets",
           "default_reference_limits", "sweep_markdown", "FAST_EPOCHS", "FULL_EPOCHS"]
FAST_EPOCHS = {"head_epochs": 2, "finetune_epochs": 4, "qat_epochs": 1}
# Without --fast the sweep trains each configuration on the same schedule as `train` and
# `pipeline` (one default per option: TrainConfig's and the pipeline's QAT epochs).
FULL_EPOCHS = {"head_epochs": TrainConfig.head_epochs, "finetune_epochs": TrainConfig.finetune_epochs,
               "qat_epochs": QAT_EPOCHS}
KERAS_FAMILIES = (("mobilenet_v1", 0.25), ("mobilenet_v1", 0.5), ("mobilenet_v2", 0.35))


def default_latency_budgets() -> dict[str, float]:
    """Latency (ms) a default model may have per board (``Board.latency_budget_ms``), checked on
    the upper ("high") or lower ("low") end of the profile's estimate."""
    return {b.name: b.latency_budget_ms for b in BOARDS.values() if b.latency_budget_ms is not None}


def default_reference_limits() -> dict[str, dict[str, float]]:
    """With a reference model: the most a board's default may take of the reference's arena and
    flatbuffer (``Board.reference_limits``)."""
    return {b.name: dict(b.reference_limits) for b in BOARDS.values() if b.reference_limits}


@dataclass
class SweepPoint:
    """One configuration: a name and the TrainConfig fields that define it."""

    name: str
    train: dict
    family: str = ""

    def describe(self) -> dict:
        t = self.train
        return {"name": self.name, "family": self.family, "arch": t.get("arch"), "alpha": t.get("alpha"),
                "size": t["size"], "color": t["color"], "blocks": t.get("blocks"),
                "skip_blocks": list(t.get("skip_blocks") or []) or None, "head": t.get("head", "avg"),
                "augment": augment_name(t),
                "weights": Path(t["weights"]).name if t.get("weights") not in (None, "imagenet", "none")
                else t.get("weights")}


# Training augmentation as a sweep axis: the TrainConfig fields each setting sets.
AUGMENTS = {"none": {"augment": False, "camera_augment": False},
            "basic": {"augment": True, "camera_augment": False},
            "camera": {"augment": True, "camera_augment": True}}
_AUG_SUFFIX = {"none": "-noaug", "basic": "", "camera": "-cam"}


def augment_name(train: dict) -> str:
    """``none``, ``basic`` or ``camera``: the :data:`AUGMENTS` entry a configuration's fields
    match (TrainConfig's defaults where it sets nothing; no ``--augment``, no camera effects)."""
    fields = TrainConfig.__dataclass_fields__
    have = {k: train.get(k, fields[k].default) for k in AUGMENTS["none"]}
    if not have["augment"]:
        return "none"
    return next(name for name, want in AUGMENTS.items() if want == have)


def _weights_family(path: Path) -> tuple[str, float]:
    """Architecture and width of a backbone file: MobileNetV2 has residual adds; the width is the
    first convolution's filters / 32."""
    from facemask_edge._tf import keras

    k = keras()
    try:
        m = k.models.load_model(path, compile=False)
    except Exception as exc:
        raise FacemaskError(f"cannot load {path} as a Keras model ({type(exc).__name__})",
                            "pass a tf_keras .h5/.keras backbone file") from None
    arch = "mobilenet_v2" if any(isinstance(layer, k.layers.Add) for layer in m.layers) else "mobilenet_v1"
    conv = next((layer for layer in m.layers if isinstance(layer, k.layers.Conv2D)
                 and not isinstance(layer, k.layers.DepthwiseConv2D)), None)
    alpha = round(conv.filters / 32, 3) if conv is not None else 0.25
    return arch, alpha


def _short_color(c: str) -> str:
    return "gray" if c == "grayscale" else c


def _weights_tags(files: list[Path]) -> list[str]:
    """Short names for backbone files in configuration names: the file name's first word
    (``vww_96.h5`` -> ``vww``), or its whole stem where two files share that word
    (``mobilenet_v1_025_imagenet`` and ``mobilenet_v1_025_retinaface``)."""
    first = [f.stem.split("_")[0] for f in files]
    return [w if first.count(w) == 1 else f.stem for w, f in zip(first, files)]


def build_grid(weights: str | list[str] | None = None, keras_weights: str | None = None, fast: bool = False,
               sizes=None, colors=None, blocks=None, families=None, skips=None,
               only=None, heads=None, augments=None) -> list[SweepPoint]:
    """The configurations to try.

    Args:
        weights: a backbone file (e.g. vww_96.h5), or several (an axis of their own): each one's
            cuts after ``blocks`` separable blocks x ``sizes`` x ``colors``.
        keras_weights: ``imagenet`` or ``none`` for Keras' MobileNets (``families``: (arch, alpha)
            pairs) x sizes x colours; ``None``/``"skip"``: not swept.
        fast: a small subset (six or so points) that still varies size, colour and depth.
        sizes, colors, blocks, families: override the grid's axes.
        skips: for the backbone file, tuples of stride-1 blocks to drop (``()``: none), e.g.
            ``[(), (3,), (3, 5)]``: an axis of its own.
        only: keep just the configurations with these names (applied last).
        heads: classifier heads, an axis (default ``["avg"]``); ``spatial`` names end in ``-sp``.
        augments: training augmentation, an axis of :data:`AUGMENTS` (default ``["basic"]``, the
            training default); ``camera`` names end in ``-cam``, ``none`` in ``-noaug``.
    """
    points: list[SweepPoint] = []
    full_sizes, full_colors = list(sizes or (64, 80, 96)), list(colors or ("rgb", "grayscale"))
    files = [Path(w).expanduser() for w in ([weights] if isinstance(weights, (str, Path)) else weights or [])]
    for wpath in files:
        if not wpath.is_file():
            raise FacemaskError(f"weights file {wpath} not found", "pass --weights PATH (e.g. vww_96.h5)")
    for wpath, stem in zip(files, _weights_tags(files)):
        arch, alpha = _weights_family(wpath)
        if fast and not (sizes or colors or blocks):
            combos = [(5, 64, "rgb"), (5, 64, "grayscale"), (5, 80, "rgb"), (5, 96, "rgb"),
                      (3, 64, "rgb"), (7, 64, "rgb")]
        else:
            cuts = list(blocks or (3, 5, 7, None))
            combos = [(b, s, c) for b in cuts for s in full_sizes for c in full_colors]
        for b, s, c in combos:
            for sk in list(skips or [()]):
                sk = tuple(sk)
                name = (f"{stem}-{f'b{b}' if b else 'full'}{'s' + ''.join(map(str, sk)) if sk else ''}"
                        f"-{s}-{_short_color(c)}")
                points.append(SweepPoint(name, {"arch": arch, "alpha": alpha, "size": s, "color": c,
                                                "blocks": b, "skip_blocks": list(sk) or None,
                                                "weights": str(wpath.resolve())},
                                         family=f"{wpath.name} ({arch} {alpha:g}, inferred)"))
    if keras_weights and keras_weights != "skip":
        fams = list(families or KERAS_FAMILIES)
        if fast and not (sizes or colors or families):
            combos = [(fams[0], 64, "rgb"), (fams[0], 96, "grayscale"), (fams[-1], 64, "rgb"),
                      (fams[-1], 96, "rgb")]
        else:
            combos = [(f, s, c) for f in fams for s in full_sizes for c in full_colors]
        for (arch, alpha), s, c in combos:
            tag = "v1" if arch == "mobilenet_v1" else "v2"
            name = f"{tag}a{alpha:g}-{s}-{_short_color(c)}"
            points.append(SweepPoint(name, {"arch": arch, "alpha": float(alpha), "size": s, "color": c,
                                            "blocks": None, "weights": keras_weights},
                                     family=f"keras {arch} ({keras_weights})"))
    if not points:
        raise FacemaskError("the sweep has no configurations",
                            "pass --weights PATH (a backbone file) and/or --keras-weights imagenet|none")
    if heads and list(heads) != ["avg"]:
        points = [SweepPoint(p.name + ("-sp" if h == "spatial" else ""), {**p.train, "head": h}, p.family)
                  for p in points for h in heads]
    if augments and list(augments) != ["basic"]:
        points = [SweepPoint(p.name + _AUG_SUFFIX[a], {**p.train, **AUGMENTS[a]}, p.family)
                  for p in points for a in augments]
    if only:
        unknown = sorted(set(only) - {p.name for p in points})
        if unknown:
            raise FacemaskError(f"--only names not in the grid: {', '.join(unknown)}",
                                "list the grid's names with --dry-run")
        points = [p for p in points if p.name in set(only)]
    names = [p.name for p in points]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise FacemaskError(f"duplicate sweep configurations: {', '.join(sorted(dup))}")
    return points


def _test_accuracy(run_dir: Path) -> float | None:
    """Int8 accuracy of the shipped model on the test split, in tflite-micro."""
    from facemask_edge.artifacts.run import Run
    from facemask_edge.convert.evaluate import split_accuracy

    return split_accuracy(Run(run_dir), "test")


def _row(point: SweepPoint, summary: dict, test_int8: float | None, seconds: float,
         reference: dict | None = None) -> dict:
    st = summary["stages"]
    tr = st["train"]["figures"]
    cv = st["convert"]["figures"]
    pr = st["profile"]["figures"]["boards"]
    row = {**point.describe(),
           "float_val_accuracy": tr.get("val", {}).get("accuracy"),
           "float_test_accuracy": tr.get("test", {}).get("accuracy"),
           "int8_val_accuracy": cv.get("val_accuracy_int8"),
           "int8_test_accuracy": test_int8,
           "quantization": cv["quantization"],
           "params": cv["params"], "macs": cv["macs"],
           "flatbuffer_bytes": cv["flatbuffer_bytes"], "arena_bytes": cv["arena_bytes"],
           "arena_vs_reference": cv["arena_bytes"] / reference["arena_bytes"] if reference else None,
           "flash_vs_reference": cv["flatbuffer_bytes"] / reference["flatbuffer_bytes"] if reference else None,
           "epochs": tr.get("epochs"),
           "seconds": round(seconds, 1),
           "boards": {b: {"fits": p["fits"], "reason": p["reason"],
                          "arena_with_margin_bytes": p["arena_with_margin_bytes"],
                          "ram_left_bytes": p["ram_left_bytes"], "flash_left_bytes": p["flash_left_bytes"],
                          # the measured camera frame when there is one (emulated Cortex-M4), else the estimate
                          "latency_ms": p.get("measured_frame_ms") or p["latency_ms"],
                          "latency_source": "measured frame" if p.get("measured_frame_ms") else "estimate",
                          "estimated_latency_ms": p["latency_ms"]} for b, p in pr.items()}}
    return row


def run_sweep(data: str | None, out: str | Path, points: list[SweepPoint], epochs: dict | None = None,
              train_options: dict | None = None, latency_budget: dict | None = None,
              tolerance: float = 0.005, evaluate_test: bool = True, reference: str | None = None,
              reference_limits: dict | None = None, latency_estimate: str = "high",
              measure: bool = False, tflm: str | None = None) -> dict:
    """Train, quantize, convert and profile every point; write the table, plots, recommendation.

    Args:
        data: data set (folder, zip, URL, or None for the default download).
        out: the sweep folder.
        points: from :func:`build_grid`.
        epochs: ``head_epochs``, ``finetune_epochs``, ``qat_epochs`` (default :data:`FULL_EPOCHS`).
        train_options: other TrainConfig fields for every point (seed, batch_size, ...).
        latency_budget: latency (ms) per board (default :func:`default_latency_budgets`).
        tolerance: accuracy difference below which two configurations count as equal.
        evaluate_test: also measure the chosen int8 model on the test split (for the table).
        reference: a reference int8 ``.tflite`` (e.g. vww_96_int8.tflite): its arena and flatbuffer
            are measured, every configuration gets its ratios, and ``reference_limits`` apply.
        reference_limits: per board, the largest ``arena``/``flash`` ratio to the reference a
            recommendation may have (default :func:`default_reference_limits`).
        latency_estimate: ``"high"`` or ``"low"``: which end of the latency estimate the budget
            is checked on.
        measure: measure every point on the emulated Cortex-M4 (the pipeline's ``measure``): the
            Nano's budget is then checked on the measured time of a camera frame (preprocessing
            and inference at the CPI range's ``latency_estimate`` end), not on the MAC estimate.
        tflm: TFLM tree for ``measure``.

    Returns:
        ``{"rows": [...], "recommendation": {...}, ...}`` (also ``OUT/sweep.json``).
    """
    from facemask_edge.data.download import resolve_data
    from facemask_edge.pipeline import PipelineConfig, run_pipeline
    from facemask_edge.artifacts.files import write_json

    out = Path(out)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    epochs = {**FULL_EPOCHS, **(epochs or {})}
    budget = {**default_latency_budgets(), **(latency_budget or {})}
    data_path, data_info = resolve_data(data)
    ref = _measure_reference(Path(reference)) if reference else None
    limits = (default_reference_limits() if reference_limits is None else reference_limits) if ref else {}
    teacher_size = None
    if (train_options or {}).get("teacher"):
        from facemask_edge.artifacts.run import Run

        from facemask_edge.train.trainer import teacher_dirs

        teacher_size = min(Run(t).config.get("size") for t in teacher_dirs(train_options["teacher"]))
    rows, failed = [], []
    t_all = time.monotonic()
    for i, p in enumerate(points, 1):
        log(f"== sweep {i}/{len(points)}: {p.name} ==")
        train = {"energy": False, "patience": max(3, epochs["finetune_epochs"]), **(train_options or {}),
                 **p.train, "head_epochs": epochs["head_epochs"], "finetune_epochs": epochs["finetune_epochs"]}
        if teacher_size and p.train["size"] >= teacher_size:
            train.pop("teacher")  # a teacher no larger than the student has nothing to pass on
            log(f"  {p.name}: trained without the teacher ({teacher_size} px, not larger)")
        cfg = PipelineConfig(out=str(out / "configs" / p.name), data=data_path, train=train,
                             qat_epochs=epochs["qat_epochs"], until="profile", measure=measure, tflm=tflm)
        t = time.monotonic()
        try:
            summary = run_pipeline(cfg)
        except FacemaskError as exc:
            log(f"  {p.name} failed: {exc}")
            failed.append({**p.describe(), "error": str(exc)})
            continue
        point_dir = out / "configs" / p.name
        cached = point_dir / "sweep_test.json"
        key = summary["stages"]["convert"].get("figures", {}).get("sha256")
        test = None
        if evaluate_test:
            prev = json.loads(cached.read_text()) if cached.exists() else {}
            if prev.get("model_sha256") == key:
                test = prev["int8_test_accuracy"]
            else:
                test = _test_accuracy(point_dir)
                write_json(cached, {"model_sha256": key, "int8_test_accuracy": test})
        secs = sum((s.get("seconds") or 0) for s in summary["stages"].values())
        rows.append(_row(p, summary, test, secs, ref))
        del t
    rec = recommend(rows, budget, tolerance, limits, latency_estimate)
    result = {"schema": 1, "data": data_path, "data_info": data_info, "epochs": epochs,
              "train_options": train_options or {}, "latency_budget_ms": budget,
              "latency_estimate": latency_estimate, "reference": ref, "reference_limits": limits,
              "tolerance": tolerance,
              "rows": rows, "failed": failed, "recommendation": rec,
              "wall_seconds": round(time.monotonic() - t_all, 1)}
    result["plots"] = _plots(out, rows, budget, ref, limits, latency_estimate)
    write_json(out / "sweep.json", result)
    write_json(out / "recommendation.json", {"schema": 1, "source": str(out / "sweep.json"),
                                             "epochs": epochs, "boards": rec})
    (out / "sweep.md").write_text(sweep_markdown(result))
    return result


def recommend(rows: list[dict], latency_budget: dict | None = None, tolerance: float = 0.005,
              reference_limits: dict | None = None, latency_estimate: str = "high") -> dict:
    """Per board: the most accurate configuration (int8, validation split) within its budget.

    Budget: fits the board (RAM and flash), latency estimate (its ``latency_estimate`` end) within
    ``latency_budget``, and, for boards in ``reference_limits``, arena and flatbuffer ratios to
    the reference within the limits (rows need ``arena_vs_reference``/``flash_vs_reference``).
    """
    if latency_estimate not in ("high", "low"):
        raise FacemaskError(f"unknown latency estimate {latency_estimate!r}", "use high or low")
    end = 1 if latency_estimate == "high" else 0
    budget = {**default_latency_budgets(), **(latency_budget or {})}
    limits = reference_limits or {}
    rec = {}
    for b in BOARDS:
        lim = limits.get(b, {})

        def within(r):
            if not r["boards"].get(b, {}).get("fits") or r.get("int8_val_accuracy") is None:
                return False
            if budget.get(b) is not None and r["boards"][b]["latency_ms"][end] > budget[b]:
                return False
            for key in ("arena", "flash"):
                ratio = r.get(f"{key}_vs_reference")
                if key in lim and (ratio is None or ratio > lim[key]):
                    return False
            return True

        ok = [r for r in rows if within(r)]
        rule = f"fit {b} with a {latency_estimate} latency estimate <= {budget.get(b)} ms" + \
            "".join(f", {k} <= {v:.0%} of the reference" for k, v in lim.items())
        if not ok:
            rec[b] = {"name": None, "why": f"none of the configurations {rule}"}
            continue
        best = max(r["int8_val_accuracy"] for r in ok)
        near = [r for r in ok if r["int8_val_accuracy"] >= best - tolerance]
        pick = min(near, key=lambda r: (r["arena_bytes"], r["macs"], -r["int8_val_accuracy"]))
        rec[b] = {"name": pick["name"],
                  "train": {k: pick.get(k) for k in ("arch", "alpha", "size", "color", "blocks", "skip_blocks", "head")},
                  "weights": pick["weights"], "family": pick["family"],
                  "int8_val_accuracy": pick["int8_val_accuracy"],
                  "int8_test_accuracy": pick.get("int8_test_accuracy"),
                  "arena_bytes": pick["arena_bytes"], "flatbuffer_bytes": pick["flatbuffer_bytes"],
                  "macs": pick["macs"], "latency_ms": pick["boards"][b]["latency_ms"],
                  "arena_vs_reference": pick.get("arena_vs_reference"),
                  "flash_vs_reference": pick.get("flash_vs_reference"),
                  "candidates": len(ok),
                  "why": (f"highest int8 validation accuracy ({best:.4f}) of the {len(ok)} configurations that "
                          f"{rule}; {len(near)} within {tolerance:g} of it, the smallest arena taken")}
    return rec


def _measure_reference(path: Path) -> dict:
    from facemask_edge.convert.runtimes import measure_arena
    from facemask_edge.artifacts.tflite import read_tflite

    if not path.is_file():
        raise FacemaskError(f"reference model {path} not found", "pass --reference PATH to an int8 .tflite")
    info = read_tflite(path, hint="pass --reference PATH to an int8 .tflite")
    return {"model": path.name, "arena_bytes": measure_arena(info.data)["total"],
            "flatbuffer_bytes": info.flatbuffer_bytes,
            "macs": info.macs}


def write_defaults(rec: dict, path: Path | None = None, source: str = "") -> Path:
    """Put the recommendation into ``facemask_edge/defaults.json`` (the pipeline's --board
    defaults): each board's arch, alpha, size, colour and blocks; other keys (epochs, weights)
    are kept."""
    from facemask_edge.artifacts.files import write_json

    path = Path(path) if path else DEFAULTS_FILE
    doc = json.loads(path.read_text()) if path.exists() else {"schema": 1, "boards": {}}
    for b, r in rec.items():
        if not r.get("name"):
            continue
        entry = doc.setdefault("boards", {}).setdefault(b, {})
        entry.setdefault("train", {}).update(r["train"])
        entry["from_sweep"] = {k: r[k] for k in ("name", "family", "weights", "int8_val_accuracy",
                                                 "int8_test_accuracy", "arena_bytes", "flatbuffer_bytes",
                                                 "macs", "latency_ms")}
    doc["source"] = source or "facemask-edge sweep"
    write_json(path, doc)
    return path


def _f(v, d=4):
    if v is None:
        return "-"
    return f"{v:.{d}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def _blocks_cell(r: dict) -> str:
    skip = r.get("skip_blocks")
    return str(r.get("blocks") or "all") + (f" without {','.join(map(str, skip))}" if skip else "")


def sweep_markdown(res: dict) -> str:
    e = res["epochs"]
    # The boards the sweep profiled (a board registered later has no figures in it).
    names = list(res["rows"][0]["boards"]) if res.get("rows") else list(BOARDS)
    lines = ["# Sweep", "",
             f"Data `{res['data']}`; each configuration trained {e['head_epochs']} + {e['finetune_epochs']} "
             f"epochs (head, fine-tuning), {e['qat_epochs']} QAT epoch(s), then converted (PTQ or QAT, "
             "whichever agrees more with the float model on validation) and profiled. Accuracies are of the int8 model in tflite-micro; "
             "the recommendation uses the validation split only. Latency: MACs x cycles/MAC / clock "
             f"(range: low-high estimate; the budget is checked on the {res.get('latency_estimate', 'high')} end); "
             "an **m** marks a time measured on the emulated Cortex-M4 instead (a camera frame: preprocessing "
             "+ inference, instructions x 1.0-1.5 cycles/instruction at the board's clock)."
             + (f" Reference `{res['reference']['model']}`: arena {res['reference']['arena_bytes']:,} B, "
                f"flatbuffer {res['reference']['flatbuffer_bytes']:,} B, {res['reference']['macs']:,} MACs."
                if res.get("reference") else ""), "",
             "| config | backbone | size | colour | blocks | augment | int8 val acc | int8 test acc | float test acc | quant | "
             "arena B | model B | MACs | " + ("arena/ref | flash/ref | " if res.get("reference") else "")
             + " | ".join(f"{b} latency ms | fits {b}" for b in names) + " | time s |",
             "|" + "---|" * (13 + (2 if res.get("reference") else 0) + 2 * len(names) + 1)]
    rows = sorted(res["rows"], key=lambda r: -(r["int8_val_accuracy"] or 0))
    for r in rows:
        cells = [r["name"], r["family"], str(r["size"]), r["color"], _blocks_cell(r), r.get("augment", "basic"),
                 _f(r["int8_val_accuracy"]), _f(r["int8_test_accuracy"]), _f(r["float_test_accuracy"]),
                 r["quantization"], _f(r["arena_bytes"]), _f(r["flatbuffer_bytes"]), _f(r["macs"])]
        if res.get("reference"):
            cells += [f"{r['arena_vs_reference']:.1%}", f"{r['flash_vs_reference']:.1%}"]
        for b in names:
            lo, hi = r["boards"][b]["latency_ms"]
            mark = " m" if r["boards"][b].get("latency_source") == "measured frame" else ""
            cells += [span(lo, hi) + mark, "yes" if r["boards"][b]["fits"] else "NO"]
        cells.append(_f(r["seconds"], 0))
        lines.append("| " + " | ".join(cells) + " |")
    if res.get("failed"):
        lines += ["", "Failed: " + "; ".join(f"{f['name']}: {f['error']}" for f in res["failed"])]
    lines += ["", "## Recommendation", ""]
    for b, r in res["recommendation"].items():
        if r.get("name"):
            lines.append(f"- **{b}**: `{r['name']}` ({r['family']}, {r['train']['size']} px {r['train']['color']}, "
                         f"blocks {_blocks_cell(r['train'])}): int8 val {r['int8_val_accuracy']:.4f}, arena "
                         f"{r['arena_bytes']:,} B, model {r['flatbuffer_bytes']:,} B, latency "
                         f"{span(*r['latency_ms'])} ms. {r['why']}.")
        else:
            lines.append(f"- **{b}**: none. {r['why']}.")
    plots = res.get("plots") or {}
    if plots:
        lines += ["", "Plots: " + ", ".join(f"`{v}`" for v in plots.values())]
    lines.append(f"\nWall time {res['wall_seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def _plots(out: Path, rows: list[dict], budget: dict, ref: dict | None = None, limits: dict | None = None,
           latency_estimate: str = "high") -> dict:
    from facemask_edge.plots import plot_pareto
    end = 1 if latency_estimate == "high" else 0
    pts = [{"name": r["name"], "accuracy": r["int8_val_accuracy"], "arena_kib": r["arena_bytes"] / 1024,
            **{f"latency_{b}": r["boards"][b]["latency_ms"][end] for b in BOARDS}} for r in rows
           if r.get("int8_val_accuracy") is not None]
    if not pts:
        return {}
    widest = max(p["arena_kib"] for p in pts)
    lines = {}
    for b, bd in BOARDS.items():
        lines[f"{b} RAM for arena+margin"] = bd.arena_ram_bytes / 1024 / 1.1  # the margin is 10 %
    if ref:
        lines[f"{ref['model']} arena"] = ref["arena_bytes"] / 1024
        for b, lim in (limits or {}).items():
            if "arena" in lim:
                lines[f"{b} target: {lim['arena']:.0%} of the reference"] = lim["arena"] * ref["arena_bytes"] / 1024
    plot_pareto(pts, "arena_kib", "accuracy", out / "pareto_arena.png", "tensor arena (KiB, TFLM measured)",
                "int8 validation accuracy", budget={k: v for k, v in lines.items() if v < 2 * widest})
    plot_pareto(pts, "latency_nano33ble", "accuracy", out / "pareto_latency.png",
                f"estimated latency on nano33ble at {BOARDS['nano33ble'].clock_hz / 1e6:.0f} MHz, "
                f"{latency_estimate} estimate (ms)",
                "int8 validation accuracy",
                budget={f"{budget['nano33ble']:g} ms budget": budget["nano33ble"]} if budget.get("nano33ble") else None)
    return {"accuracy vs arena": "pareto_arena.png", "accuracy vs latency": "pareto_latency.png"}
