"""Evaluate a run on the host: the float model, and the shipped int8 model in tflite-micro and in
TFLite's reference kernels; the other int8 variants alongside, labelled as variants.

The report is about ``model_int8.tflite``, the file export, board-sim and validate use: a
corrupt, replaced or stale shipped model is an error, not a row of figures. Each int8 model is
reported with the study's metrics in each runtime, the drop from the float model, and how
exactly the two runtimes agree (they should be bit-identical: same reference kernels). Per class
(precision, recall, F1, confusion matrix) and per source (file-name prefix such as
``amvd``/``mfn``, else the data root: see ``data.sources``), because a model can score well
overall by recognising which set a photo came from. Writes ``evaluation.json``,
``evaluation.md`` and one confusion-matrix PNG per model and runtime into
``RUN_DIR/evaluation`` (or ``--out``).

:func:`int8_predictions` is the one way the package runs an int8 model over images (conversion's
choice of variant, evaluation, the sweep's test accuracy); :func:`split_accuracy` is its accuracy
on one split of the run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from facemask_edge.data.preprocess import to_int8
from facemask_edge.errors import FacemaskError, ModelError
from facemask_edge.progress import log, progress

__all__ = ["evaluate_run", "evaluation_markdown", "int8_predictions", "split_accuracy", "RUNTIMES",
           "per_class_markdown_sections"]

RUNTIMES = ("tflm", "tflite_ref")


def int8_predictions(model: bytes, images: np.ndarray, runtime: str = "tflm", bar=None) -> np.ndarray:
    """Raw int8 scores of an int8 model for uint8 images (preprocessed as the board does).

    Args:
        model: ``.tflite`` bytes.
        images: uint8 ``(N, S, S, C)``; fed as ``pixel - 128``, like the firmware.
        runtime: ``tflm`` (tflite-micro, the boards' kernels) or ``tflite_ref`` (TFLite's
            ``BUILTIN_REF`` kernels).
        bar: a progress bar to advance per image.
    """
    from facemask_edge.convert.runtimes import TFLiteRefRunner, TFLMRunner

    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}", f"use one of {', '.join(RUNTIMES)}")
    runner = TFLMRunner(model) if runtime == "tflm" else TFLiteRefRunner(model)
    return runner.run_batch(to_int8(images), bar)


def split_accuracy(run, split: str, model: bytes | None = None) -> float | None:
    """Int8 accuracy on one split of the run (default model: the shipped one), in tflite-micro.

    Returns:
        The accuracy, or None when the split is empty.
    """
    from facemask_edge.metrics import classification_metrics

    data = run.data()
    x, y = data.part(split)
    if not len(x):
        return None
    model = model if model is not None else run.shipped().data
    return classification_metrics(y, int8_predictions(model, x).argmax(1), data.classes)["accuracy"]


def _eval_set(run, data: str | list[str] | None):
    """The images to evaluate, their labels, classes, a description, paths and sources."""
    from facemask_edge.data.ingest import scan_dataset
    from facemask_edge.data.sources import run_sources, source_of

    if data is None:
        rd = run.data()
        x, y = rd.part("test")
        paths = [rd.paths[i] for i in rd.split["test"]]
        return x, y, rd.classes, f"test split of {_roots(rd.config['data'])}", paths, \
            run_sources(run.path, paths, None)
    cfg = run.config
    classes = run.labels
    ds = scan_dataset(data, size=cfg["size"], color=cfg["color"])
    missing = [c for c in classes if c not in ds.classes]
    if missing:
        raise FacemaskError(f"{data} has no class folder for {', '.join(missing)} (it has "
                            f"{', '.join(ds.classes)}; the run's classes are {', '.join(classes)})",
                            "use a folder with the run's class folders")
    # Class folders the model does not have (e.g. a three-class set for a two-class model) are
    # left out; the others are relabelled to the run's class order.
    to_run = np.array([classes.index(c) if c in classes else -1 for c in ds.classes], dtype=np.int64)
    labels = to_run[ds.labels]
    keep = np.flatnonzero(labels >= 0)
    what = f"all of {ds.root}"
    extra = [c for c in ds.classes if c not in classes]
    if extra:
        log(f"leaving out {len(ds.items) - len(keep)} image(s) of {', '.join(extra)}: not a class of this run")
        what += f" but {', '.join(extra)}"
    items = [ds.items[i] for i in keep]
    return ds.images[keep], labels[keep], classes, what, [it.path for it in items], \
        [source_of(it.path, it.root or str(ds.root)) for it in items]


def _roots(data) -> str:
    return " + ".join(map(str, data)) if isinstance(data, list) else str(data)


def evaluate_run(run_dir: Path, data: str | None = None, out: Path | None = None) -> dict:
    """Evaluate the float model, the shipped int8 model and the other int8 variants of a run.

    Returns:
        The report (also saved): ``float``, ``shipped`` (the figures of ``model_int8.tflite``,
        with its ``quantization`` and ``sha256``) and ``variants`` (per kind: the same figures,
        or ``"shipped": true`` for the variant that is the shipped file).

    Raises:
        ModelError: the shipped model is missing, not a TFLite model, not the one its card
            describes, or made from an earlier model (nothing is written then).
    """
    from facemask_edge.artifacts.files import write_json
    from facemask_edge.artifacts.run import EVALUATION, FLOAT_MODEL, Run
    from facemask_edge.metrics import classification_metrics
    from facemask_edge.plots import plot_confusion

    run = Run(run_dir)
    shipped = run.shipped()  # before anything is read or written: a bad model stops here
    models = [("shipped", shipped)]
    variants: dict[str, dict] = {}
    for kind in run.variant_kinds():
        try:
            v = run.variant(kind)
        except ModelError as exc:
            log(f"leaving out the {kind.upper()} variant: {exc.message}")
            continue
        variants[kind] = {"model": v.name, "sha256": v.sha256, "shipped": v.sha256 == shipped.sha256}
        if v.sha256 != shipped.sha256:
            models.append((kind, v))
    x, y, classes, what, paths, sources = _eval_set(run, data)
    if len(x) == 0:
        raise FacemaskError("no images to evaluate")
    out = Path(out) if out else run.file(EVALUATION)
    log(f"evaluating the shipped model ({shipped.kind.upper()}, sha256 {shipped.sha256[:12]}) on "
        f"{len(x)} images ({what})" + (f"; variants {', '.join(variants)}" if variants else ""))
    report: dict = {"images": int(len(x)), "set": what, "classes": classes,
                    "made_from": {FLOAT_MODEL: run.sha256(FLOAT_MODEL), shipped.name: shipped.sha256}}

    t0 = time.monotonic()
    pf = run.float_model().predict(x.astype(np.float32) / 255.0, batch_size=128, verbose=0)
    yf = pf.argmax(1)
    report["float"] = classification_metrics(y, yf, classes)
    report["float"]["seconds"] = round(time.monotonic() - t0, 1)
    _add_per_source(report["float"], y, yf, classes, sources)
    figures = {"float": (report["float"], f"float: accuracy {report['float']['accuracy']:.4f}")}

    for label, m in models:
        entry: dict = {"model": m.name, "quantization": m.kind, "sha256": m.sha256}
        scores = {}
        for rt in RUNTIMES:
            t1 = time.monotonic()
            with progress(f"{label} ({m.kind}) int8 in {rt}", total=len(x)) as bar:
                s = int8_predictions(m.data, x, rt, bar)
            scores[rt] = s
            met = classification_metrics(y, s.argmax(1), classes)
            met["seconds"] = round(time.monotonic() - t1, 1)
            met["drop_vs_float_points"] = round(100 * (report["float"]["accuracy"] - met["accuracy"]), 3)
            met["label_agreement_with_float"] = float((s.argmax(1) == yf).mean())
            entry[rt] = met
            if rt == "tflm":  # the board's kernels; tflite_ref agrees bit for bit (checked below)
                _add_per_source(met, y, s.argmax(1), classes, sources)
            name = "shipped" if label == "shipped" else f"variant_{label}"
            figures[f"{name}_{rt}"] = (met, f"{_title(label, m.kind)} ({rt}): accuracy {met['accuracy']:.4f}")
        a, b = scores["tflm"].astype(int), scores["tflite_ref"].astype(int)
        entry["runtimes_bit_exact_rate"] = float((a == b).all(axis=1).mean())
        entry["runtimes_label_agreement"] = float((a.argmax(1) == b.argmax(1)).mean())
        entry["runtimes_max_score_diff"] = int(np.abs(a - b).max())
        wrong = np.where(scores["tflm"].argmax(1) != y)[0]
        entry["misclassified_tflm"] = [{"path": paths[i], "true": classes[y[i]],
                                        "predicted": classes[int(scores['tflm'][i].argmax())],
                                        "scores": scores["tflm"][i].tolist()} for i in wrong[:50]]
        if label == "shipped":
            report["shipped"] = entry
        else:
            variants[label].update(entry)
    report["variants"] = variants
    # Only now, with everything computed, does the report folder appear.
    out.mkdir(parents=True, exist_ok=True)
    for name, (met, title) in figures.items():
        plot_confusion(met["confusion_matrix"], classes, out / f"confusion_{name}.png", title)
    write_json(out / "evaluation.json", report)
    (out / "evaluation.md").write_text(evaluation_markdown(report) + per_class_markdown_sections(report))
    return report


def _add_per_source(m: dict, y, pred, classes: list[str], sources: list[str]) -> None:
    from facemask_edge.metrics import per_source_metrics

    if len(set(sources)) > 1 or len(classes) > 2:
        m["per_source"] = per_source_metrics(y, pred, classes, sources)


def per_class_markdown_sections(report: dict) -> str:
    """Per class (precision/recall/F1, macro-F1, confusion matrix) and per source, for the float
    model and each int8 model in tflite-micro."""
    from facemask_edge.metrics import per_class_markdown, per_source_markdown

    classes = report["classes"]
    sh = report["shipped"]
    models = [("float", report["float"]), (f"shipped ({sh['quantization']}) int8 (tflm)", sh["tflm"])]
    models += [(f"variant {k} int8 (tflm)", e["tflm"]) for k, e in report["variants"].items() if not e["shipped"]]
    lines = ["", "## Per class and per source", ""]
    for name, m in models:
        lines += per_class_markdown(m, classes, name) + [""]
        if m.get("per_source"):
            lines += per_source_markdown(m["per_source"], classes) + [""]
    return "\n".join(lines)


def _title(label: str, kind: str) -> str:
    return f"shipped int8 ({kind.upper()})" if label == "shipped" else f"variant {kind.upper()} int8"


def evaluation_markdown(report: dict) -> str:
    """The report as a Markdown table (one row per model and runtime)."""
    sh = report["shipped"]
    lines = [f"# Evaluation on {report['images']} images ({report['set']})", "",
             f"Shipped model: `{sh['model']}` ({sh['quantization'].upper()}, sha256 {sh['sha256'][:16]}...). "
             "Variants are the other int8 conversions of this run, for comparison; they are not shipped.", "",
             "| model | runtime | accuracy | F1 | precision | recall | change vs float (points) |",
             "|---|---|---|---|---|---|---|"]
    f = report["float"]
    lines.append(f"| float | tf_keras | {f['accuracy']:.4f} | {f['f1']:.4f} | {f['precision']:.4f} "
                 f"| {f['recall']:.4f} | - |")
    rows = [(f"shipped ({sh['quantization']}) int8", sh)]
    rows += [(f"variant {kind} int8", e) for kind, e in report["variants"].items() if not e["shipped"]]
    for name, e in rows:
        for rt in RUNTIMES:
            m = e[rt]
            lines.append(f"| {name} | {rt} | {m['accuracy']:.4f} | {m['f1']:.4f} | "
                         f"{m['precision']:.4f} | {m['recall']:.4f} | {_change(m['drop_vs_float_points'])} |")
    same = [k for k, e in report["variants"].items() if e["shipped"]]
    if same:
        lines += ["", f"The {same[0].upper()} variant is the shipped model (same file)."]
    lines += ["", "| model | TFLM vs TFLite-ref bit-exact | label agreement | max score diff (LSB) |",
              "|---|---|---|---|"]
    for name, e in rows:
        lines.append(f"| {name} | {100 * e['runtimes_bit_exact_rate']:.2f} % | "
                     f"{100 * e['runtimes_label_agreement']:.2f} % | {e['runtimes_max_score_diff']} |")
    return "\n".join(lines) + "\n"


def _change(drop_points: float) -> str:
    """int8 accuracy minus float accuracy, in points: ``-13.33`` is a drop, ``+1.67`` a gain."""
    change = -drop_points
    return "0.00" if abs(change) < 0.005 else f"{change:+.2f}"
