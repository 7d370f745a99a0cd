"""The study's classification metrics: accuracy, precision, recall, F1 (macro and per class),
per source, and how they are shown.

The one home for metrics: training, ``evaluate``, the pipeline summary and the validation report
all call these. With more than two classes the headline is macro-F1 (:func:`headline`): a small
class such as "mask worn incorrectly" hardly moves accuracy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["classification_metrics", "confusion_matrix", "per_source_metrics", "headline",
           "per_class_markdown", "per_source_markdown"]


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def classification_metrics(y_true, y_pred, classes: list[str]) -> dict:
    """Accuracy, macro precision/recall/F1, per-class figures and the confusion matrix.

    A class never predicted (or absent) gets precision (recall) 0, not NaN, as scikit-learn's
    ``zero_division=0`` does.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    cm = confusion_matrix(y_true, y_pred, len(classes))
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    actual = cm.sum(axis=1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    n = int(cm.sum())
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
        "images": n,
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(actual[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
    }


def per_source_metrics(y_true, y_pred, classes: list[str], sources: list[str]) -> dict:
    """:func:`classification_metrics` for each source (``data.sources.source_of``) separately.

    ``macro_f1`` and ``macro_recall`` of a source average only the classes it has images of:
    a source without "without_mask" faces is not marked down for them.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    src = np.asarray(sources, dtype=object)
    out = {}
    for s in sorted(set(sources)):
        sel = src == s
        m = classification_metrics(y_true[sel], y_pred[sel], classes)
        present = [c for c in classes if m["per_class"][c]["support"] > 0]
        m["macro_f1"] = float(np.mean([m["per_class"][c]["f1"] for c in present])) if present else 0.0
        m["macro_recall"] = float(np.mean([m["per_class"][c]["recall"] for c in present])) if present else 0.0
        out[s] = m
    return out


def headline(m: dict, classes: list[str]) -> tuple[str, float]:
    """The one figure to lead with: accuracy for two classes, macro-F1 for more."""
    if len(classes) > 2:
        return "macro-F1", float(m["f1"])
    return "accuracy", float(m["accuracy"])


def per_class_markdown(m: dict, classes: list[str], title: str = "") -> list[str]:
    """Markdown lines: per-class precision/recall/F1 with support, macro-F1, confusion matrix."""
    lines = [f"**{title}**" if title else "", ""] if title else []
    lines += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c in classes:
        p = m["per_class"][c]
        lines.append(f"| {c} | {p['precision']:.4f} | {p['recall']:.4f} | {p['f1']:.4f} | {p['support']} |")
    lines.append(f"| **macro** | {m['precision']:.4f} | {m['recall']:.4f} | **{m['f1']:.4f}** | {m['images']} |")
    lines += ["", "| true \\ predicted | " + " | ".join(classes) + " |",
              "|---|" + "---|" * len(classes)]
    for c, row in zip(classes, m["confusion_matrix"]):
        lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def per_source_markdown(per_source: dict, classes: list[str]) -> list[str]:
    """Markdown lines: one row per source, recall per class (``-`` where it has none)."""
    lines = ["| source | images | accuracy | macro-F1 (its classes) | " +
             " | ".join(f"recall {c}" for c in classes) + " |",
             "|---|---|---|---|" + "---|" * len(classes)]
    for s, m in per_source.items():
        rec = [f"{m['per_class'][c]['recall']:.4f} ({m['per_class'][c]['support']})"
               if m["per_class"][c]["support"] else "-" for c in classes]
        lines.append(f"| {s} | {m['images']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | " +
                     " | ".join(rec) + " |")
    return lines
