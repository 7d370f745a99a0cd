"""Every stage in one call: data -> train -> QAT -> convert -> profile -> evaluate -> export ->
validate, then a summary.

Each stage writes into the run folder and is recorded in ``RUN_DIR/pipeline_state.json`` with a
key: the hash of its options and of the files it reads. A stage whose key is unchanged and whose
outputs are still the files it wrote is skipped, so re-running a finished pipeline redoes
nothing, changing an option redoes that stage and those after it (their inputs change), and
re-running after an interruption continues at the interrupted stage (validation even resumes
mid-way: its results are kept image by image).

Options come from, lowest first: the dataclass defaults, the board's entry in
``facemask_edge/defaults.json`` (or the demo preset), a TOML file, and explicit arguments.
``summary.md``, ``summary.json`` and ``summary_*.png`` hold every stage's figures and wall time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facemask_edge.runs import sha256_file
from facemask_edge.errors import FacemaskError
from facemask_edge.progress import log

__all__ = ["STAGES", "PipelineConfig", "build_config", "board_defaults", "demo_preset",
           "run_pipeline", "summary_markdown", "load_toml"]

STAGES = ("data", "train", "qat", "convert", "profile", "evaluate", "export", "validate")
STATE = "pipeline_state.json"
DEMO_PER_CLASS = 100
_PATH_KEYS = ("data", "out", "reference", "weights", "teacher")


@dataclass
class PipelineConfig:
    """Every pipeline option. ``train`` holds :class:`~facemask_edge.train.trainer.TrainConfig`
    fields (``data`` and ``out`` are filled in from here)."""

    out: str = ""
    data: str | None = None  # DIR, ZIP, http(s) URL of a zip, or None: the default data set
    board: str = "nano33ble"
    port: str | None = None  # a real board; None: the simulator
    train: dict = field(default_factory=dict)
    qat_epochs: int = 3  # 0: no QAT, post-training quantization only
    qat_lr: float = 5e-5
    representative: int = 300
    quantization: str = "best"  # "best": QAT or PTQ, whichever is more faithful to the float model
    # on the validation split (convert.select_best); "qat" or "ptq": that one
    compare_ptq: bool = True  # also convert post-training-quantized, for the evaluation
    reference: str | None = None  # a reference .tflite profiled alongside (e.g. vww_96_int8)
    validate_limit: int | None = None
    validate_timeout: float = 8.0
    baud: int = 921600  # --port's UART speed (USB CDC ignores it)
    sim: str = "subprocess"  # "subprocess": `facemask-edge board-sim` process; "inprocess"
    sim_baud: int = 0  # 0: unpaced (USB-CDC-like)
    export_format: str = "sketch"
    until: str | None = None  # stop after this stage (the sweep stops after "profile")
    demo: bool = False

    def variants(self) -> list[str]:
        """The int8 variants to convert; the last is the one asked for."""
        qat = self.qat_epochs > 0 and self.quantization != "ptq"
        ptq = self.compare_ptq or not qat or self.quantization in ("ptq", "best")
        return (["ptq"] if ptq else []) + (["qat"] if qat else [])

    def train_config(self, data_path: str):
        from facemask_edge.train.trainer import TrainConfig

        return TrainConfig(**{**self.train, "data": data_path, "out": self.out})


# ---- configuration -----------------------------------------------------------------------------

def board_defaults(board: str) -> dict:
    """The board's pipeline options from its registry entry's model defaults
    (:func:`facemask_edge.boards.model_defaults`, i.e. ``defaults.json``; ``{}`` if none).

    Only pipeline options are returned; the entry's record of where it came from
    (``from_sweep``) is not one.
    """
    from dataclasses import fields

    from facemask_edge.boards import model_defaults

    entry = model_defaults(board)
    return {k: v for k, v in entry.items() if k in {f.name for f in fields(PipelineConfig)}}


def demo_preset(out: Path) -> dict:
    """Options of ``--demo``: synthetic faces and the tiny backbone, trained for seconds."""
    return {
        "data": str(out / "demo-data"),
        "train": {"arch": "mobilenet_v1", "alpha": 0.25, "size": 48, "color": "rgb", "blocks": None,
                  "weights": str(out / "demo-backbone.h5"), "head_epochs": 2, "finetune_epochs": 16,
                  "head_lr": 1e-2, "finetune_lr": 1e-2, "patience": 16, "energy": False, "seed": 7},
        "qat_epochs": 1, "qat_lr": 1e-4, "representative": 50, "sim": "inprocess",
    }


def load_toml(path: str | Path) -> dict:
    """Read a pipeline TOML file; relative paths in it are relative to the file."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise FacemaskError(f"config file {path} not found", "pass --config FILE.toml")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FacemaskError(f"{path} is not valid TOML: {exc}", "see README 'Pipeline config'") from None
    base = path.resolve().parent

    def fix(d: dict) -> None:
        for k in _PATH_KEYS:
            v = d.get(k)
            if isinstance(v, str) and v and not _is_special(k, v) and not Path(v).expanduser().is_absolute():
                d[k] = str(base / v)
            elif isinstance(v, list):  # several teachers
                d[k] = [str(base / x) if isinstance(x, str) and not Path(x).expanduser().is_absolute() else x
                        for x in v]

    fix(data)
    if isinstance(data.get("train"), dict):
        fix(data["train"])
    return data


def _is_special(key: str, value: str) -> bool:
    from facemask_edge.data.download import is_url

    return is_url(value) or (key == "weights" and value in ("imagenet", "none"))


def _check_keys(layer: dict, where: str) -> None:
    from facemask_edge.train.trainer import TrainConfig

    top = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for key, value in layer.items():
        if key not in top:
            hint = f"did you mean [train] {key}?" if key in train_fields else \
                f"valid keys: {', '.join(sorted(top))}"
            raise FacemaskError(f"unknown option {key!r} in {where}", hint)
    for key in (layer.get("train") or {}):
        if key in ("data", "out"):
            raise FacemaskError(f"[train] {key} in {where}: set it at the top level", None)
        if key not in train_fields:
            valid = sorted(k for k in train_fields if k not in ("data", "out"))
            raise FacemaskError(f"unknown training option {key!r} in {where}",
                                f"valid [train] keys: {', '.join(valid)}")


def _merge(base: dict, layer: dict) -> dict:
    out = dict(base)
    for k, v in layer.items():
        if k == "train":
            out["train"] = {**out.get("train", {}), **(v or {})}
        else:
            out[k] = v
    return out


def build_config(cli: dict | None = None, toml: str | Path | None = None) -> PipelineConfig:
    """Resolve the options: defaults < board defaults (or demo preset) < TOML < ``cli``.

    Args:
        cli: explicitly given options (``None`` values are ignored), ``train`` a dict of
            TrainConfig fields.
        toml: path of a TOML file (top-level pipeline keys, a ``[train]`` table).
    """
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    cli["train"] = {k: v for k, v in (cli.get("train") or {}).items() if v is not None}
    _check_keys(cli, "the options")
    file_layer = load_toml(toml) if toml else {}
    _check_keys(file_layer, str(toml))
    demo = bool(cli.get("demo", file_layer.get("demo", False)))
    board = cli.get("board") or file_layer.get("board") or PipelineConfig.board
    from facemask_edge.boards import get_board

    get_board(board)
    out = cli.get("out") or file_layer.get("out") or ("facemask-edge-demo" if demo else "")
    if not out:
        raise FacemaskError("no run folder given", "pass --out RUN_DIR (or out = ... in --config)")
    preset = demo_preset(Path(out).expanduser().resolve()) if demo else board_defaults(board)
    merged: dict = {"train": {}}
    for layer in (preset, file_layer, cli):
        merged = _merge(merged, layer)
    merged["out"], merged["board"] = str(Path(out).expanduser()), board
    if demo:  # the demo's data and backbone are its own, whatever a config file says
        merged["data"], merged["train"]["weights"] = preset["data"], preset["train"]["weights"]
    cfg = PipelineConfig(**merged)
    if cfg.until is not None and cfg.until not in STAGES:
        raise FacemaskError(f"unknown stage {cfg.until!r}", f"use one of {', '.join(STAGES)}")
    if cfg.quantization not in ("best", "qat", "ptq"):
        raise FacemaskError(f"unknown quantization {cfg.quantization!r}", "use best, qat or ptq")
    if cfg.sim not in ("subprocess", "inprocess"):
        raise FacemaskError(f"unknown sim {cfg.sim!r}", "use subprocess or inprocess")
    _coerce_train(cfg.train)
    return cfg


def _coerce_train(train: dict) -> None:
    from facemask_edge.train.trainer import TrainConfig

    defaults = TrainConfig()
    for k, v in list(train.items()):
        d = getattr(defaults, k)
        if isinstance(d, bool) and not isinstance(v, bool):
            raise FacemaskError(f"training option {k} must be true or false, not {v!r}")
        if isinstance(d, float) and isinstance(v, int) and not isinstance(v, bool):
            train[k] = float(v)
        elif isinstance(d, (int, float)) and not isinstance(d, bool) and not isinstance(v, (int, float)):
            raise FacemaskError(f"training option {k} must be a number, not {v!r}")


# ---- state ---------------------------------------------------------------------------------------



#: Training options added after run folders existed: at these defaults they are left out of the
#: train stage's key, so a run trained before the option existed stays up to date.
_KEY_NEUTRAL_DEFAULTS = {"head": "avg"}


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _fingerprint_tree(path: Path) -> str:
    """Cheap identity of a data set: relative names, sizes and modification times."""
    path = Path(path)
    if not path.exists():
        return "missing"
    h = hashlib.sha256()
    items = [path] if path.is_file() else _files_under(path)
    for p in items:
        st = p.stat()
        rel = p.name if p == path else p.relative_to(path).as_posix()
        h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class _State:
    """``pipeline_state.json``: per stage its key, status, outputs (with hashes), time, figures."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.path = run_dir / STATE
        self.data = {"schema": 1, "stages": {}}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except ValueError:
                log(f"  {self.path.name} is damaged: every stage runs again")

    def entry(self, stage: str) -> dict:
        return self.data["stages"].get(stage, {})

    def up_to_date(self, stage: str, key: str) -> bool:
        e = self.entry(stage)
        if e.get("status") != "done" or e.get("key") != key:
            return False
        for rel, sha in e.get("outputs", {}).items():
            p = self.run_dir / rel
            if not p.is_file() or sha256_file(p) != sha:
                return False
        return True

    def resumable(self, stage: str, key: str) -> bool:
        e = self.entry(stage)
        return e.get("status") == "running" and e.get("key") == key

    def mark(self, stage: str, **fields) -> None:
        e = self.data["stages"].setdefault(stage, {})
        e.update(fields)
        self.save()

    def forget_from(self, stage: str) -> None:
        for s in STAGES[STAGES.index(stage):]:
            self.data["stages"].pop(s, None)
        self.save()

    def save(self) -> None:
        from facemask_edge.runs import write_json

        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.data)


# ---- stages --------------------------------------------------------------------------------------

@dataclass
class _Stage:
    name: str
    title: str
    inputs: list[str]  # run-folder files whose content the stage depends on
    options: dict
    run: object  # callable(resume: bool) -> (outputs: list[str], figures: dict)
    enabled: bool = True
    why_disabled: str = ""


class _Runner:
    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.run_dir = Path(cfg.out).expanduser()
        self.state = _State(self.run_dir)
        self.data_path: str | None = None
        self.data_info: dict = {}
        self.statuses: dict[str, dict] = {}

    # -- helpers --
    def rel(self, p: Path) -> str:
        return Path(p).relative_to(self.run_dir).as_posix()

    # -- stage bodies --
    def do_data(self) -> dict:
        from facemask_edge.data.download import resolve_data

        if self.cfg.demo:
            self._make_demo_inputs()
        path, info = resolve_data(self.cfg.data)
        self.data_path = str(Path(path).expanduser().resolve())
        self.data_info = info
        return info

    def _make_demo_inputs(self) -> None:
        from facemask_edge.testing import make_synthetic_dataset, make_tiny_backbone

        data = Path(self.cfg.data)
        marker = data / ".complete"
        if not marker.exists():
            log(f"demo: drawing {DEMO_PER_CLASS} synthetic faces per class (with and without a mask)")
            make_synthetic_dataset(data, per_class=DEMO_PER_CLASS, size=64, seed=3)
            marker.write_text("ok\n")
        weights = Path(self.cfg.train["weights"])
        if not weights.exists():
            log("demo: saving a tiny randomly-initialised MobileNet-style backbone")
            make_tiny_backbone(weights, size=32)

    def stage_train(self, resume: bool):
        from facemask_edge.runs import read_json
        from facemask_edge.train.trainer import train

        _fresh_keras_session()
        metrics = train(self.cfg.train_config(self.data_path))
        del metrics
        m = read_json(self.run_dir / "metrics.json")
        outs = ["config.json", "labels.txt", "split.json", "manifest.json", "metrics.json", "model.keras"]
        return outs, _train_figures(m)

    def stage_qat(self, resume: bool):
        from facemask_edge.train.qat import qat

        _fresh_keras_session()
        r = qat(self.run_dir, epochs=self.cfg.qat_epochs, lr=self.cfg.qat_lr,
                batch_size=int(self.cfg.train.get("batch_size", 32)))
        return ["model_qat.h5", "qat.json"], r

    def stage_convert(self, resume: bool):
        from facemask_edge.convert.converter import convert_run, select_best
        from facemask_edge.runs import read_json, write_json

        kinds = self.cfg.variants()
        for stale in ("ptq", "qat"):  # evaluate compares every variant present: only ours
            if stale not in kinds:
                for name in (f"model_int8_{stale}.tflite", f"model_card_{stale}.json"):
                    (self.run_dir / name).unlink(missing_ok=True)
        if self.cfg.quantization == "best" and kinds == ["ptq", "qat"]:
            # Both variants; the one most faithful to the float model on validation is installed.
            sel = select_best(self.run_dir, representative=self.cfg.representative)
            val = {k: v["accuracy"] for k, v in sel["validation"].items()}
        else:
            for kind in kinds:  # the last one converted becomes model_int8.tflite
                convert_run(self.run_dir, qat=(kind == "qat"), representative=self.cfg.representative)
            chosen = self.cfg.quantization if self.cfg.quantization in kinds else kinds[-1]
            if chosen != kinds[-1]:
                card = read_json(self.run_dir / f"model_card_{chosen}.json")
                card["model"] = "model_int8.tflite"
                data = (self.run_dir / f"model_int8_{chosen}.tflite").read_bytes()
                (self.run_dir / "model_int8.tflite").write_bytes(data)
                write_json(self.run_dir / "model_card.json", card)
            val = _val_accuracy(self.run_dir, kinds)
            log("  int8 validation accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items())
                + f"; model_int8.tflite is the {chosen.upper()} model")
        card = read_json(self.run_dir / "model_card.json")
        figures = {"quantization": card["quantization"], "val_accuracy_int8": val.get(card["quantization"]),
                   "flatbuffer_bytes": card["flatbuffer_bytes"],
                   "arena_bytes": card["arena_bytes"], "macs": card["macs"], "params": card["params"],
                   "ops": [o["name"] for o in card["ops"]], "sha256": card["sha256"],
                   "rule": self.cfg.quantization, "variants": {}}
        for kind in kinds:
            c = read_json(self.run_dir / f"model_card_{kind}.json")
            figures["variants"][kind] = {"flatbuffer_bytes": c["flatbuffer_bytes"],
                                         "arena_bytes": c["arena_bytes"],
                                         "val_accuracy_int8": val.get(kind),
                                         "seconds": c.get("convert_seconds")}
        outs = ["model_int8.tflite", "model_card.json"] + \
            [n for k in kinds for n in (f"model_int8_{k}.tflite", f"model_card_{k}.json")]
        return outs, figures

    def stage_profile(self, resume: bool):
        from facemask_edge.boards import BOARDS
        from facemask_edge.profile import profile_model, profile_table
        from facemask_edge.runs import read_json, write_json

        card = read_json(self.run_dir / "model_card.json")
        model = self.run_dir / "model_int8.tflite"
        figures: dict = {"boards": {}, "target": self.cfg.board}
        rows = []
        for b in BOARDS:
            p = profile_model(model, b, arena=card.get("arena_bytes"))
            write_json(self.run_dir / f"profile_{b}.json", p)
            rows.append((self.run_dir.name, p))
            figures["boards"][b] = _profile_figures(p)
        outs = [f"profile_{b}.json" for b in BOARDS]
        if self.cfg.reference:
            ref = Path(self.cfg.reference)
            if not ref.is_file():
                raise FacemaskError(f"reference model {ref} not found", "check --reference")
            refp, arena = {}, None
            for b in BOARDS:
                p = profile_model(ref, b, arena=arena)
                arena = p["arena_bytes"]
                refp[b] = p
                rows.append((ref.name + " (reference)", p))
            write_json(self.run_dir / "profile_reference.json",
                       {"model": str(ref), "sha256": sha256_file(ref), "boards": refp})
            outs.append("profile_reference.json")
            r0 = next(iter(refp.values()))
            figures["reference"] = {
                "model": ref.name, "arena_bytes": r0["arena_bytes"], "flash_bytes": r0["flash_bytes"],
                "macs": r0["macs"], "latency_ms": {b: p["latency_ms"] for b, p in refp.items()},
                "arena_ratio": card["arena_bytes"] / r0["arena_bytes"],
                "flash_ratio": card["flatbuffer_bytes"] / r0["flash_bytes"],
                "macs_ratio": card["macs"] / r0["macs"] if r0["macs"] else None,
            }
        (self.run_dir / "profile.md").write_text(profile_table(rows) + "\n")
        outs.append("profile.md")
        return outs, figures

    def stage_evaluate(self, resume: bool):
        from facemask_edge.convert.evaluate import evaluate_run

        rep = evaluate_run(self.run_dir)
        fig = {"images": rep["images"], "set": rep["set"],
               "float": _metric_figures(rep["float"]), "int8": {}}
        for kind, e in rep["models"].items():
            fig["int8"][kind] = {"tflm": _metric_figures(e["tflm"]),
                                 "tflite_ref": _metric_figures(e["tflite_ref"]),
                                 "drop_vs_float_points": e["tflm"]["drop_vs_float_points"],
                                 "label_agreement_with_float": e["tflm"]["label_agreement_with_float"],
                                 "runtimes_bit_exact_rate": e["runtimes_bit_exact_rate"]}
        return ["evaluation/evaluation.json", "evaluation/evaluation.md"], fig

    def stage_export(self, resume: bool):
        from facemask_edge.export import export_run

        res = export_run(self.run_dir, self.cfg.board, fmt=self.cfg.export_format)  # RUN/export/
        root = res.path if res.path.is_dir() else res.path.parent
        files = [self.rel(p) for p in (_files_under(root) if res.path.is_dir() else [res.path])]
        b = res.budget
        return files, {"path": self.rel(res.path), "format": res.format, "files": len(files),
                       "ops": list(res.ops), "model_bytes": res.model_bytes,
                       "arena_allocated_bytes": b.arena_with_margin_bytes if b else None}

    def stage_validate(self, resume: bool):
        out = self.run_dir / ("validate-board" if self.cfg.port else "validate-sim")
        report = self._validate(out, fresh=not resume)
        link = report.get("link", {})
        a = report["agreement"]
        fig = {"target": self.cfg.port or f"board-sim {self.cfg.board} ({self.cfg.sim})",
               "images": report["validated"], "complete": report["complete"],
               "board_accuracy": report["board"]["accuracy"], "board_macro_f1": report["board"]["macro_f1"],
               "host_accuracy": report["host"]["accuracy"], "bit_exact": a["bit_exact"],
               "label_agreement": a["label"], "max_score_diff": a["max_score_diff"],
               "latency_ms": report["latency_ms"], "images_per_s": link.get("images_per_s"),
               "wire_bytes_per_image": link.get("wire_bytes_per_image"),
               "payload_efficiency": link.get("payload_efficiency"), "retries": link.get("retries"),
               "report": self.rel(out / "report.md")}
        return [self.rel(out / n) for n in ("report.json", "report.md", "results.jsonl")], fig

    def _validate(self, out: Path, fresh: bool) -> dict:
        from facemask_edge.validate.runner import validate_run

        sim = proc = None
        try:
            if self.cfg.port:
                url = self.cfg.port
            elif self.cfg.sim == "inprocess":
                from facemask_edge.device.sim import BoardSimulator, load_run_model

                model, card = load_run_model(self.run_dir)
                sim = BoardSimulator(model, card, board=self.cfg.board, baud=self.cfg.sim_baud)
                url = sim.start()
            else:
                proc, url = _start_sim_process(self.run_dir, self.cfg.board, self.cfg.sim_baud)
            log(f"  validating on {url}" + ("" if self.cfg.port else f" (simulated {self.cfg.board})"))
            report, _ = validate_run(self.run_dir, [url], out_dir=out, fresh=fresh,
                                     baud=self.cfg.baud if self.cfg.port else 921600,
                                     timeout=self.cfg.validate_timeout, limit=self.cfg.validate_limit)
            return report
        finally:
            if sim is not None:
                sim.stop()
            if proc is not None:
                _stop_process(proc)

    # -- driver --
    def stages(self) -> list[_Stage]:
        cfg = self.cfg
        tc = asdict(cfg.train_config(self.data_path or ""))
        tc.pop("out")
        for k, v in _KEY_NEUTRAL_DEFAULTS.items():
            if tc.get(k) == v:
                tc.pop(k)
        weights = tc.get("weights")
        if weights and weights not in ("imagenet", "none") and Path(weights).expanduser().is_file():
            tc["weights_sha256"] = sha256_file(Path(weights).expanduser())
        tc["data_fingerprint"] = _fingerprint_tree(Path(self.data_path)) if self.data_path else None
        use_qat = "qat" in cfg.variants()
        train_outs = ["config.json", "labels.txt", "split.json", "model.keras"]
        model_files = ["model_int8.tflite", "model_card.json"]
        ref = {"path": str(Path(cfg.reference).resolve()),
               "sha256": sha256_file(Path(cfg.reference)) if Path(cfg.reference).is_file() else None} \
            if cfg.reference else None
        from facemask_edge.boards import BOARDS

        return [
            _Stage("train", "train (feature extractor, then fine-tuning)", [], tc, self.stage_train),
            _Stage("qat", "quantization-aware training", train_outs,
                   {"epochs": cfg.qat_epochs, "lr": cfg.qat_lr, "batch_size": cfg.train.get("batch_size", 32)},
                   self.stage_qat, enabled=use_qat,
                   why_disabled="qat_epochs = 0" if cfg.qat_epochs <= 0 else "quantization = ptq"),
            _Stage("convert", "full-int8 conversion", train_outs + (["model_qat.h5"] if use_qat else []),
                   {"variants": cfg.variants(), "quantization": cfg.quantization,
                    "representative": cfg.representative},
                   self.stage_convert),
            _Stage("profile", "arena, flash and latency per board", model_files,
                   {"boards": list(BOARDS), "reference": ref}, self.stage_profile),
            _Stage("evaluate", "float vs int8 (TFLM, TFLite-ref) on the test split",
                   train_outs + model_files + self._variant_files(), {}, self.stage_evaluate),
            _Stage("export", f"firmware sources for {cfg.board}", model_files,
                   {"board": cfg.board, "format": cfg.export_format, "firmware": _firmware_hash(cfg.board)},
                   self.stage_export),
            _Stage("validate", "on-device validation ("
                   + (f"board at {cfg.port})" if cfg.port else f"simulated {cfg.board})"),
                   ["config.json", "split.json"] + model_files,
                   {"target": cfg.port or f"sim:{cfg.board}:{cfg.sim_baud}", "limit": cfg.validate_limit},
                   self.stage_validate),
        ]

    def _variant_files(self) -> list[str]:
        return [f"model_int8_{k}.tflite" for k in self.cfg.variants()]

    def input_key(self, st: _Stage) -> str:
        files = {}
        for rel in st.inputs:
            p = self.run_dir / rel
            files[rel] = sha256_file(p) if p.is_file() else None
        return _key({"stage": st.name, "options": st.options, "inputs": files})


def _fresh_keras_session() -> None:
    """Drop graphs of earlier runs in this process (a sweep runs many): memory, and layer names,
    which restart from their defaults (QAT finds its input quantizer by variable name)."""
    from facemask_edge._tf import keras

    keras().backend.clear_session()


def _val_accuracy(run_dir: Path, kinds: list[str]) -> dict[str, float]:
    """Int8 accuracy of each variant on the validation split, in tflite-micro."""
    from facemask_edge.convert.runtimes import TFLMRunner
    from facemask_edge.data.preprocess import to_int8
    from facemask_edge.runs import load_run_data

    x, y = load_run_data(run_dir).part("val")
    if not len(x):
        return {}
    xq = to_int8(x)
    return {k: float((TFLMRunner(run_dir / f"model_int8_{k}.tflite").run_batch(xq).argmax(1) == y).mean())
            for k in kinds}


def _train_figures(m: dict) -> dict:
    out = {k: m.get(k) for k in ("train_images", "val_images", "test_images", "skipped_files",
                                 "params", "epochs", "stage_seconds", "wall_seconds")}
    for split in ("val", "test"):
        if split in m:
            out[split] = _metric_figures(m[split])
    return out


def _metric_figures(m: dict) -> dict:
    return {k: m.get(k) for k in ("accuracy", "f1", "precision", "recall", "images") if k in m}


def _profile_figures(p: dict) -> dict:
    return {k: p[k] for k in ("fits", "reason", "arena_bytes", "arena_with_margin_bytes", "ram_left_bytes",
                              "flash_bytes", "flash_used_bytes", "flash_left_bytes", "macs", "latency_ms",
                              "clock_hz", "arena_placement")}


def _firmware_hash(board: str) -> str | None:
    """Hash of the firmware sources export copies (a changed sketch means a new export)."""
    from facemask_edge.export.exporter import sketch_template
    from facemask_edge.paths import firmware_dir

    try:
        dirs = (firmware_dir() / "common", sketch_template(board))
    except FacemaskError:
        return None
    h = hashlib.sha256()
    for d in dirs:
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if p.is_file():
                    h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _start_sim_process(run_dir: Path, board: str, baud: int):
    """``facemask-edge board-sim`` as its own process (its own core, like a real board)."""
    import select

    cmd = [sys.executable, "-m", "facemask_edge", "board-sim", str(run_dir), "--board", board,
           "--baud", str(baud), "--camera-every", "0"]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline().strip() if ready else ""
    if not line:
        _stop_process(proc)
        err = (proc.stderr.read() or "").strip().splitlines()
        raise FacemaskError(f"board-sim did not start: {err[-1] if err else 'no output'}",
                            f"try it alone: facemask-edge board-sim {run_dir} --board {board}")
    return proc, line


def _stop_process(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()


# ---- driver --------------------------------------------------------------------------------------

def run_pipeline(cfg: PipelineConfig, redo: str | None = None) -> dict:
    """Run every stage that is not up to date, then write the summary.

    Args:
        cfg: the resolved options (see :func:`build_config`).
        redo: a stage name: forget it and every later stage's record first.

    Returns:
        The summary (also ``RUN_DIR/summary.json``).

    Raises:
        FacemaskError: a stage failed (the summary is still written, with the failure).
    """
    r = _Runner(cfg)
    run_dir = r.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if redo:
        if redo not in STAGES:
            raise FacemaskError(f"unknown stage {redo!r}", f"use one of {', '.join(STAGES)}")
        r.state.forget_from(redo if redo != "data" else "train")
    t_all = time.monotonic()
    n = len(STAGES)
    failure: BaseException | None = None
    try:
        t0 = time.monotonic()
        log(f"[1/{n}] data")
        info = r.do_data()
        r.statuses["data"] = {"status": "done", "seconds": round(time.monotonic() - t0, 1), "figures": info}
        log(f"  {r.data_path}")
        for i, st in enumerate(r.stages(), start=2):
            if cfg.until and STAGES.index(st.name) > STAGES.index(cfg.until):
                r.statuses[st.name] = {"status": f"not asked (until {cfg.until})"}
                continue
            if not st.enabled:
                log(f"[{i}/{n}] {st.name}: off ({st.why_disabled})")
                r.statuses[st.name] = {"status": "off", "why": st.why_disabled}
                r.state.data["stages"].pop(st.name, None)
                continue
            key = r.input_key(st)
            if r.state.up_to_date(st.name, key):
                e = r.state.entry(st.name)
                log(f"[{i}/{n}] {st.name}: up to date (took {e.get('seconds', 0):.1f} s on {e.get('finished', '?')})")
                r.statuses[st.name] = {"status": "up to date", "seconds": e.get("seconds"),
                                       "figures": e.get("figures", {})}
                continue
            resume = r.state.resumable(st.name, key)
            log(f"[{i}/{n}] {st.name}: {st.title}" + (" (resuming)" if resume else ""))
            r.state.mark(st.name, key=key, status="running", started=_now(), outputs={}, figures={})
            t = time.monotonic()
            outs, figures = st.run(resume)
            secs = round(time.monotonic() - t, 1)
            outs = [o for o in outs if (run_dir / o).is_file()]
            r.state.mark(st.name, status="done", seconds=secs, finished=_now(), figures=figures,
                         outputs={o: sha256_file(run_dir / o) for o in outs})
            r.statuses[st.name] = {"status": "done", "seconds": secs, "figures": figures}
            log(f"  {st.name} done in {secs:.1f} s")
    except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt too: the summary says where it stopped
        failure = exc
        raise
    finally:
        summary = _write_summary(r, time.monotonic() - t_all, failure)
    return summary


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _write_summary(r: _Runner, wall: float, failure: BaseException | None) -> dict:
    from facemask_edge.runs import write_json

    cfg = r.cfg
    stages = {}
    for name in STAGES:
        if name in r.statuses:
            stages[name] = r.statuses[name]
        else:
            e = r.state.entry(name)
            stages[name] = {"status": "not run" if not e else e.get("status", "not run"),
                            "seconds": e.get("seconds"), "figures": e.get("figures", {})}
    if failure is not None:
        current = next((s for s in STAGES if r.state.entry(s).get("status") == "running"), None) or \
            next((s for s in STAGES if s not in r.statuses), None)
        if current:
            why = "interrupted" if isinstance(failure, KeyboardInterrupt) else f"failed: {failure}"
            stages[current] = {**stages.get(current, {}), "status": why}
    summary = {
        "schema": 1,
        "run": str(r.run_dir),
        "board": cfg.board,
        "demo": cfg.demo,
        "complete": failure is None,
        "data": r.data_path,
        "data_info": r.data_info,
        "options": {**{k: v for k, v in asdict(cfg).items() if k != "train"}, "train": cfg.train},
        "stages": stages,
        "pipeline_seconds": round(sum((s.get("seconds") or 0) for s in stages.values()), 1),
        "this_invocation_seconds": round(wall, 1),
        "headline": _headline(stages, cfg),
        "versions": _versions(),
    }
    try:
        summary["plots"] = _plots(r.run_dir, summary)
    except Exception as exc:  # a plot must never hide the results
        summary["plots"] = {"error": f"{type(exc).__name__}: {exc}"}
    write_json(r.run_dir / "summary.json", summary)
    (r.run_dir / "summary.md").write_text(summary_markdown(summary))
    return summary


def _headline(stages: dict, cfg: PipelineConfig) -> dict:
    """The figures people ask for first, from the stages' figures."""
    h: dict = {}
    tr = stages.get("train", {}).get("figures", {})
    ev = stages.get("evaluate", {}).get("figures", {})
    cv = stages.get("convert", {}).get("figures", {})
    pr = stages.get("profile", {}).get("figures", {})
    va = stages.get("validate", {}).get("figures", {})
    if ev.get("float"):
        h["float_test_accuracy"] = ev["float"]["accuracy"]
        h["float_test_f1"] = ev["float"]["f1"]
    elif tr.get("test"):
        h["float_test_accuracy"] = tr["test"]["accuracy"]
        h["float_test_f1"] = tr["test"]["f1"]
    kind = cv.get("quantization")
    if kind and ev.get("int8", {}).get(kind):
        h["int8_host_test_accuracy"] = ev["int8"][kind]["tflm"]["accuracy"]
        h["int8_host_test_f1"] = ev["int8"][kind]["tflm"]["f1"]
    if va:
        h["int8_device_test_accuracy"] = va.get("board_accuracy")
        h["int8_device_test_f1"] = va.get("board_macro_f1")
        h["device_host_bit_exact"] = va.get("bit_exact")
        h["validation_images_per_s"] = va.get("images_per_s")
    if cv:
        h.update({"quantization": kind, "flatbuffer_bytes": cv.get("flatbuffer_bytes"),
                  "arena_bytes": cv.get("arena_bytes"), "macs": cv.get("macs")})
    b = pr.get("boards", {}).get(cfg.board)
    if b:
        h["fits_" + cfg.board] = b["fits"]
        for name, p in pr["boards"].items():
            h[f"latency_ms_{name}"] = p["latency_ms"]
    if pr.get("reference"):
        h["arena_vs_reference"] = pr["reference"]["arena_ratio"]
        h["flash_vs_reference"] = pr["reference"]["flash_ratio"]
    return h


def _versions() -> dict:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("facemask-edge", "tensorflow", "tf_keras", "tensorflow-model-optimization", "tflite-micro"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.{digits if abs(v) < 10 else 1}f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return f"{v[0]:.0f}-{v[1]:.0f}" if v[0] != v[1] else f"{v[0]:.0f}"
    return str(v)


def summary_markdown(s: dict) -> str:
    """The summary as Markdown: headline, per-stage status and time, per-stage figures."""
    lines = [f"# Pipeline summary: {Path(s['run']).name}", ""]
    if s.get("demo"):
        lines += ["**Demo run**: synthetic drawn faces and a tiny randomly-initialised backbone. It shows "
                  "every stage working; its accuracy says nothing about real photos.", ""]
    lines += [f"- board: `{s['board']}`; data: `{s['data']}`"
              + (f" (downloaded from {s['data_info'].get('url')}, sha256 {s['data_info'].get('sha256', '')[:16]}...)"
                 if s.get("data_info", {}).get("source") == "download" else ""),
              f"- complete: {'yes' if s['complete'] else 'NO'}; stage time {s['pipeline_seconds']:.1f} s "
              f"(this invocation {s['this_invocation_seconds']:.1f} s)", ""]
    h = s.get("headline", {})
    if h:
        lines += ["| figure | value |", "|---|---|"]
        for k, v in h.items():
            lines.append(f"| {k.replace('_', ' ')} | {_fmt(v)} |")
        lines.append("")
    lines += ["## Stages", "", "| stage | status | wall time s |", "|---|---|---|"]
    for name, st in s["stages"].items():
        lines.append(f"| {name} | {st.get('status')} | {_fmt(st.get('seconds'), 1)} |")
    lines.append("")
    st = s["stages"]
    ev = st.get("evaluate", {}).get("figures", {})
    va = st.get("validate", {}).get("figures", {})
    if ev.get("float"):
        lines += [f"## Accuracy ({ev.get('images')} images, {ev.get('set')})", "",
                  "| model | runtime | accuracy | F1 |", "|---|---|---|---|",
                  f"| float | tf_keras | {_fmt(ev['float']['accuracy'])} | {_fmt(ev['float']['f1'])} |"]
        for kind, e in ev.get("int8", {}).items():
            for rt in ("tflm", "tflite_ref"):
                lines.append(f"| {kind} int8 | {rt} (host) | {_fmt(e[rt]['accuracy'])} | {_fmt(e[rt]['f1'])} |")
        if va:
            lines.append(f"| {st.get('convert', {}).get('figures', {}).get('quantization', '')} int8 | "
                         f"{va.get('target')} | {_fmt(va.get('board_accuracy'))} | {_fmt(va.get('board_macro_f1'))} |")
        lines.append("")
    if va:
        lines += ["## On-device validation", "",
                  f"{va.get('images')} images on {va.get('target')}: bit-exact with the host int8 model "
                  f"{_fmt(100 * (va.get('bit_exact') or 0), 2)} %, label agreement "
                  f"{_fmt(100 * (va.get('label_agreement') or 0), 2)} %, "
                  f"{_fmt(va.get('images_per_s'), 1)} images/s, report `{va.get('report')}`.", ""]
    pr = st.get("profile", {}).get("figures", {})
    if pr.get("boards"):
        lines += ["## Budget per board", "",
                  "| board | fits | arena B | arena+margin B | RAM left B | model flash B | flash left B | MACs "
                  "| latency ms |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for b, p in pr["boards"].items():
            lines.append(f"| {b} | {_fmt(p['fits'])} | {_fmt(p['arena_bytes'])} | "
                         f"{_fmt(p['arena_with_margin_bytes'])} | "
                         f"{_fmt(p['ram_left_bytes'])} | {_fmt(p['flash_bytes'])} | {_fmt(p['flash_left_bytes'])} | "
                         f"{_fmt(p['macs'])} | {_fmt(p['latency_ms'])} |")
        ref = pr.get("reference")
        if ref:
            lines += ["", f"Reference `{ref['model']}`: arena {_fmt(ref['arena_bytes'])} B, flatbuffer "
                      f"{_fmt(ref['flash_bytes'])} B, {_fmt(ref['macs'])} MACs. This model: arena "
                      f"{100 * ref['arena_ratio']:.1f} %, flash {100 * ref['flash_ratio']:.1f} %"
                      + (f", MACs {100 * ref['macs_ratio']:.1f} %" if ref.get("macs_ratio") else "")
                      + " of the reference."]
        lines.append("")
    ex = st.get("export", {}).get("figures", {})
    if ex:
        lines += ["## Export", "", f"`{ex.get('path')}` ({ex.get('files')} files, ops {', '.join(ex.get('ops', []))}, "
                  f"arena allocated {_fmt(ex.get('arena_allocated_bytes'))} B). Next: "
                  f"`facemask-edge flash --board {s['board']} --sketch {Path(s['run']) / str(ex.get('path'))}`.", ""]
    plots = s.get("plots") or {}
    if plots and "error" not in plots:
        lines += ["## Plots", ""] + [f"- {k}: `{v}`" for k, v in plots.items()] + [""]
    return "\n".join(lines)


def _plots(run_dir: Path, s: dict) -> dict:
    from facemask_edge.plots import _plt

    plt = _plt()
    out = {}
    st = s["stages"]
    secs = [(n, v.get("seconds") or 0.0) for n, v in st.items() if v.get("seconds")]
    if secs:
        fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
        ax.barh([n for n, _ in secs][::-1], [v for _, v in secs][::-1], color="tab:blue")
        for i, (_, v) in enumerate(secs[::-1]):
            ax.text(v, i, f" {v:.1f} s", va="center", fontsize=8)
        ax.set_xlabel("wall time (s)")
        ax.set_title(f"pipeline stages: {sum(v for _, v in secs):.0f} s in all", fontsize=10)
        fig.tight_layout()
        fig.savefig(run_dir / "summary_stages.png")
        plt.close(fig)
        out["stage times"] = "summary_stages.png"
    h = s.get("headline", {})
    bars = [(lbl, h.get(k)) for lbl, k in (("float", "float_test_accuracy"),
                                           ("int8 host", "int8_host_test_accuracy"),
                                           ("int8 device", "int8_device_test_accuracy")) if h.get(k) is not None]
    if bars:
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
        ax.bar([b for b, _ in bars], [v for _, v in bars], color=["tab:gray", "tab:blue", "tab:green"][:len(bars)])
        lo = min(v for _, v in bars)
        ax.set_ylim(max(0.0, lo - 0.05), 1.0)
        for i, (_, v) in enumerate(bars):
            ax.text(i, v, f"{v:.4f}", ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("test accuracy")
        ax.set_title("accuracy: float, int8 on the host, int8 on the (simulated) board", fontsize=9)
        fig.tight_layout()
        fig.savefig(run_dir / "summary_accuracy.png")
        plt.close(fig)
        out["accuracy"] = "summary_accuracy.png"
    pr = st.get("profile", {}).get("figures", {})
    if pr.get("boards"):
        from facemask_edge.boards import get_board

        names = list(pr["boards"])
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
        for ax, (what, key, cap) in zip(axes, (("arena + margin", "arena_with_margin_bytes", "ram"),
                                                ("model flash", "flash_bytes", "flash"))):
            vals = [pr["boards"][b][key] / 1024 for b in names]
            avail = []
            for b in names:
                bd = get_board(b)
                avail.append((bd.arena_ram_bytes if cap == "ram" else bd.model_flash_bytes) / 1024)
            x = range(len(names))
            ax.bar([i - 0.2 for i in x], avail, width=0.4, color="lightgray", label="available")
            ax.bar([i + 0.2 for i in x], vals, width=0.4, color="tab:blue", label="this model")
            ref = pr.get("reference")
            if ref:
                rv = ref["arena_bytes"] if key != "flash_bytes" else ref["flash_bytes"]
                ax.axhline(rv / 1024, ls="--", c="tab:red",
                           label=f"{ref['model']} ({'arena without margin' if cap == 'ram' else 'flatbuffer'})")
            ax.set_xticks(list(x), names)
            ax.set_ylabel("KiB")
            ax.set_title(what, fontsize=10)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(run_dir / "summary_budget.png")
        plt.close(fig)
        out["budget"] = "summary_budget.png"
    return out
