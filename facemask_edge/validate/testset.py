"""The images to validate with: a run's test split, or any folder, preprocessed as the board does."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facemask_edge.data.preprocess import to_int8
from facemask_edge.errors import DataError

__all__ = ["ValidationSet", "load_validation_set"]


@dataclass
class ValidationSet:
    """Labelled images at the model's input size, in a fixed order.

    Attributes:
        keys: one identifier per image (its path relative to the data root).
        labels: true class index per image, in the model's output order.
        classes: the model's labels.
        pixels: uint8 ``(N, S, S, C)``, what the board's preprocessing produces.
        source: ``"test split"`` or the folder validated.
        data_root: the data root the keys are relative to.
        sources: per image, its source (``data.sources.source_of``: ``amvd``, ``mfn``, or the
            data root's name), for the per-source figures; empty if unknown.
    """

    keys: list[str]
    labels: np.ndarray
    classes: list[str]
    pixels: np.ndarray
    source: str
    data_root: str
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def input_bytes(self, i: int) -> bytes:
        """The int8 model input of image ``i`` (``pixel - 128``), as streamed to the board."""
        return to_int8(self.pixels[i]).tobytes()


def load_validation_set(run, data: str | Path | None = None,
                        limit: int | None = None) -> ValidationSet:
    """Load the run's test split (default) or every image of ``data``.

    Images are decoded and preprocessed with the device's integer pipeline
    (``device_preprocess``) at the size and colour of the shipped model's card.

    Args:
        run: the run (a :class:`~facemask_edge.artifacts.run.Run` or its folder).
        data: a folder to validate instead of the test split.
        limit: only the first N images.

    Raises:
        DataError: the data root is missing, or its classes are not the model's labels.
        ModelError: the run has no usable shipped model (see ``Run.shipped``).
    """
    from facemask_edge.data.ingest import scan_dataset
    from facemask_edge.data.sources import source_of
    from facemask_edge.data.splits import split_indices

    from facemask_edge.artifacts.run import CONFIG, Run

    run = run if isinstance(run, Run) else Run(run)
    card = run.shipped().card
    inp = card["input"]
    size = int(inp.get("size") or inp["shape"][1])
    color = inp.get("color") or ("grayscale" if int(inp["shape"][-1]) == 1 else "rgb")
    labels = list(card.get("labels") or [])
    if data is None:
        if not run.exists(CONFIG):
            raise DataError(f"{run.file(CONFIG)} not found", "pass --data DIR to validate a folder of images")
        root = run.config.get("data")
        if not root:
            raise DataError(f"{run.file(CONFIG)} does not say where the data is", "pass --data DIR")
        # As at training: a run trained without non-commercial sources is tested without them.
        ds = scan_dataset(root, size=size, color=color,
                          exclude_noncommercial=bool(run.config.get("exclude_noncommercial")))
        index = split_indices(ds, run.split())["test"]
        source = "test split"
    else:
        ds = scan_dataset(data, size=size, color=color)
        index = np.arange(len(ds.items))
        source = str(data)
    if not labels:
        labels = ds.classes
    missing = [c for c in ds.classes if c not in labels]
    if missing:
        raise DataError(f"class folder(s) {', '.join(missing)} are not among the model's labels "
                        f"({', '.join(labels)})", "name the folders like the labels the model was trained on")
    to_model = np.array([labels.index(c) for c in ds.classes], dtype=np.int64)
    if limit is not None:
        index = index[:limit]
    if len(index) == 0:
        raise DataError("no images to validate", "check --data or the run's split.json")
    return ValidationSet(
        keys=[ds.items[i].path for i in index],
        labels=to_model[ds.labels[index]],
        classes=labels,
        pixels=ds.images[index],
        source=source,
        data_root=str(ds.root),
        sources=[source_of(ds.items[i].path, ds.items[i].root or str(ds.root)) for i in index],
    )
