"""PNG plots of results people look at: confusion matrices, training curves, trade-offs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_confusion", "plot_curves", "plot_pareto"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm, classes: list[str], path: Path, title: str = "Confusion matrix") -> Path:
    """Save a confusion matrix (rows true, columns predicted) with counts and row percentages."""
    plt = _plt()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(classes), 1.2 + 1.2 * len(classes)), dpi=120)
    ax.imshow(cm, cmap="Blues")
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            color = "white" if cm[i, j] > cm.max() / 2 else "black"
            ax.text(j, i, f"{cm[i, j]}\n{100 * cm[i, j] / rows[i, 0]:.1f}%", ha="center",
                    va="center", color=color, fontsize=9)
    ax.set_xticks(range(len(classes)), classes, rotation=20)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_curves(history: dict[str, list[float]], path: Path, stage_breaks: list[int] = ()) -> Path:
    """Save loss and accuracy per epoch for train and validation, with stage boundaries."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=(prefix or "train_") + key)
        for b in stage_breaks:
            ax.axvline(b + 0.5, color="gray", lw=0.8, ls=":")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_pareto(points: list[dict], x: str, y: str, path: Path, xlabel: str, ylabel: str,
                budget: dict[str, float] | None = None, label_key: str = "name") -> Path:
    """Scatter ``points`` (dicts) by ``x``/``y``, highlight the Pareto front (low x, high y)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    pts = sorted((p for p in points if p.get(x) is not None and p.get(y) is not None),
                 key=lambda p: (p[x], -p[y]))
    front, best = [], -np.inf
    for p in pts:
        if p[y] > best:
            front.append(p)
            best = p[y]
    ax.scatter([p[x] for p in pts], [p[y] for p in pts], c="tab:blue", alpha=0.6)
    ax.plot([p[x] for p in front], [p[y] for p in front], "-o", c="tab:red", label="Pareto front")
    for p in pts:
        ax.annotate(str(p.get(label_key, "")), (p[x], p[y]), fontsize=6, alpha=0.8)
    for name, value in (budget or {}).items():
        ax.axvline(value, ls="--", c="gray")
        ax.text(value, ax.get_ylim()[0], f" {name}", rotation=90, va="bottom", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
