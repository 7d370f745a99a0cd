"""The study's classification metrics: accuracy, precision, recall, F1 (macro and per class)."""

from __future__ import annotations

import numpy as np

__all__ = ["classification_metrics", "confusion_matrix"]


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
