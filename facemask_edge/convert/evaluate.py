"""Evaluate a run on the host: float model, int8 in tflite-micro, int8 in TFLite's reference kernels.

For each int8 variant (PTQ and QAT, when both exist) it reports the study's metrics in each
runtime, the drop from the float model, and how exactly the two int8 runtimes agree (they should
be bit-identical: same reference kernels). Per class (precision, recall, F1, confusion matrix) and
per source (file-name prefix such as ``amvd``/``mfn``, else the data root: see
``data.sources``), because a model can score well overall by recognising which set a photo
came from. Writes ``evaluation.json``, ``evaluation.md`` and one
confusion-matrix PNG per model and runtime into ``RUN_DIR/evaluation`` (or ``--out``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from facemask_edge.artifacts.tflite import read_tflite
from facemask_edge.data.preprocess import to_int8
from facemask_edge.errors import FacemaskError
from facemask_edge.progress import log, progress

__all__ = ["evaluate_run", "evaluation_markdown", "per_class_markdown_sections"]


def _eval_set(run_dir: Path, data: str | None):
    from facemask_edge.data.ingest import scan_dataset
    from facemask_edge.runs import load_config, load_labels, load_run_data

    if data is None:
        rd = load_run_data(run_dir)
        x, y = rd.part("test")
        paths = [rd.paths[i] for i in rd.split["test"]]
        return x, y, rd.classes, f"test split of {_roots(rd.config['data'])}", paths, _sources(run_dir, paths, None)
    cfg = load_config(run_dir)
    classes = load_labels(run_dir)
    ds = scan_dataset(data, size=cfg["size"], color=cfg["color"])
    if ds.classes != classes:
        raise FacemaskError(f"classes of {data} ({', '.join(ds.classes)}) differ from the run's "
                            f"({', '.join(classes)})", "use a folder with the same class folders")
    paths = [it.path for it in ds.items]
    return ds.images, ds.labels, classes, f"all of {ds.root}", paths, \
        [source_of(it.path, it.root or str(ds.root)) for it in ds.items]


def _roots(data) -> str:
    return " + ".join(map(str, data)) if isinstance(data, list) else str(data)


def _sources(run_dir: Path, paths: list[str], root: str | None) -> list[str]:
    from facemask_edge.data.sources import run_sources

    return run_sources(run_dir, paths, root)


def source_of(path: str, root: str | None) -> str:
    from facemask_edge.data.sources import source_of as _source_of

    return _source_of(path, root)


def evaluate_run(run_dir: Path, data: str | None = None, out: Path | None = None) -> dict:
    """Evaluate the float and int8 models of a run. Returns the report (also saved)."""
    from facemask_edge._tf import keras
    from facemask_edge.convert.runtimes import TFLiteRefRunner, TFLMRunner
    from facemask_edge.metrics import classification_metrics
    from facemask_edge.plots import plot_confusion
    from facemask_edge.runs import write_json

    run_dir = Path(run_dir)
    # Every int8 model of the run goes through the reader before any work: a damaged file is
    # one error line, not a crash in a runtime after the images are decoded.
    for name in ("model_int8.tflite", "model_int8_ptq.tflite", "model_int8_qat.tflite"):
        if (run_dir / name).exists():
            read_tflite(run_dir / name, hint=f"re-run `facemask-edge convert {run_dir}` to write it again")
    out = Path(out) if out else run_dir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    x, y, classes, what, paths, sources = _eval_set(run_dir, data)
    if len(x) == 0:
        raise FacemaskError("no images to evaluate")
    variants = [(k, run_dir / f"model_int8_{k}.tflite") for k in ("ptq", "qat")]
    variants = [(k, p) for k, p in variants if p.exists()]
    if not variants and (run_dir / "model_int8.tflite").exists():
        variants = [("int8", run_dir / "model_int8.tflite")]
    if not variants:
        raise FacemaskError(f"no int8 model in {run_dir}", f"run facemask-edge convert {run_dir}")
    log(f"evaluating on {len(x)} images ({what})")
    report: dict = {"images": int(len(x)), "set": what, "classes": classes, "models": {}}

    t0 = time.monotonic()
    model = keras().models.load_model(run_dir / "model.keras", compile=False)
    pf = model.predict(x.astype(np.float32) / 255.0, batch_size=128, verbose=0)
    yf = pf.argmax(1)
    report["float"] = classification_metrics(y, yf, classes)
    report["float"]["seconds"] = round(time.monotonic() - t0, 1)
    _add_per_source(report["float"], y, yf, classes, sources)
    plot_confusion(report["float"]["confusion_matrix"], classes, out / "confusion_float.png",
                   f"float: accuracy {report['float']['accuracy']:.4f}")

    xq = to_int8(x)
    for kind, path in variants:
        entry: dict = {"model": path.name}
        scores = {}
        for rt, cls in (("tflm", TFLMRunner), ("tflite_ref", TFLiteRefRunner)):
            t1 = time.monotonic()
            runner = cls(path)
            with progress(f"{kind} int8 in {rt}", total=len(xq)) as bar:
                s = runner.run_batch(xq, bar)
            scores[rt] = s
            m = classification_metrics(y, s.argmax(1), classes)
            m["seconds"] = round(time.monotonic() - t1, 1)
            m["drop_vs_float_points"] = round(100 * (report["float"]["accuracy"] - m["accuracy"]), 3)
            m["label_agreement_with_float"] = float((s.argmax(1) == yf).mean())
            entry[rt] = m
            if rt == "tflm":  # the board's kernels; tflite_ref agrees bit for bit (checked below)
                _add_per_source(m, y, s.argmax(1), classes, sources)
            plot_confusion(m["confusion_matrix"], classes, out / f"confusion_{kind}_{rt}.png",
                           f"{kind} int8 ({rt}): accuracy {m['accuracy']:.4f}")
        a, b = scores["tflm"].astype(int), scores["tflite_ref"].astype(int)
        entry["runtimes_bit_exact_rate"] = float((a == b).all(axis=1).mean())
        entry["runtimes_label_agreement"] = float((a.argmax(1) == b.argmax(1)).mean())
        entry["runtimes_max_score_diff"] = int(np.abs(a - b).max())
        wrong = np.where(scores["tflm"].argmax(1) != y)[0]
        entry["misclassified_tflm"] = [{"path": paths[i], "true": classes[y[i]],
                                        "predicted": classes[int(scores['tflm'][i].argmax())],
                                        "scores": scores["tflm"][i].tolist()} for i in wrong[:50]]
        report["models"][kind] = entry
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
    models = [("float", report["float"])] + [(f"{k} int8 (tflm)", e["tflm"]) for k, e in report["models"].items()]
    lines = ["", "## Per class and per source", ""]
    for name, m in models:
        lines += per_class_markdown(m, classes, name) + [""]
        if m.get("per_source"):
            lines += per_source_markdown(m["per_source"], classes) + [""]
    return "\n".join(lines)


def evaluation_markdown(report: dict) -> str:
    """The report as a Markdown table (one row per model and runtime)."""
    lines = [f"# Evaluation on {report['images']} images ({report['set']})", "",
             "| model | runtime | accuracy | F1 | precision | recall | drop vs float (points) |",
             "|---|---|---|---|---|---|---|"]
    f = report["float"]
    lines.append(f"| float | tf_keras | {f['accuracy']:.4f} | {f['f1']:.4f} | {f['precision']:.4f} "
                 f"| {f['recall']:.4f} | - |")
    for kind, e in report["models"].items():
        for rt in ("tflm", "tflite_ref"):
            m = e[rt]
            lines.append(f"| {kind} int8 | {rt} | {m['accuracy']:.4f} | {m['f1']:.4f} | "
                         f"{m['precision']:.4f} | {m['recall']:.4f} | {m['drop_vs_float_points']:+.2f} |")
    lines += ["", "| model | TFLM vs TFLite-ref bit-exact | label agreement | max score diff (LSB) |",
              "|---|---|---|---|"]
    for kind, e in report["models"].items():
        lines.append(f"| {kind} | {100 * e['runtimes_bit_exact_rate']:.2f} % | "
                     f"{100 * e['runtimes_label_agreement']:.2f} % | {e['runtimes_max_score_diff']} |")
    return "\n".join(lines) + "\n"
