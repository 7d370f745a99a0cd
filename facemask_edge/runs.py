"""A run folder: what each stage reads back from earlier stages."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facemask_edge.errors import DataError, FacemaskError

__all__ = ["RunData", "load_config", "load_labels", "load_run_data", "write_json", "write_atomic",
           "read_json", "sha256_file"]


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Replace ``path`` with ``data`` so that a kill or a power cut leaves the old file or the
    new one, never half of one: a temporary file in the same folder, fsynced, renamed over
    ``path``, then the folder fsynced so the rename itself is on disk."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def write_json(path: Path, data) -> Path:
    """Write JSON state atomically (:func:`write_atomic`)."""
    return write_atomic(path, json.dumps(data, indent=1, default=_default))


def _default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def load_config(run_dir: Path) -> dict:
    """``config.json`` of a trained run, with a clear error when the folder is not one."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise FacemaskError(f"run folder {run_dir} does not exist",
                            "train first: facemask-edge train --data DIR --out RUN_DIR")
    if not path.exists():
        raise FacemaskError(f"{run_dir} is not a trained run (no config.json)",
                            "train first: facemask-edge train --data DIR --out RUN_DIR")
    return read_json(path)


def load_labels(run_dir: Path) -> list[str]:
    return [line for line in (Path(run_dir) / "labels.txt").read_text().splitlines() if line]


@dataclass
class RunData:
    """The run's data set at the model's input size, and its saved split."""

    config: dict
    classes: list[str]
    images: np.ndarray  # uint8 (N, S, S, C), device-preprocessed
    labels: np.ndarray
    paths: list[str]
    split: dict[str, np.ndarray]  # item indices per split

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        idx = self.split[name]
        return self.images[idx], self.labels[idx]


def load_run_data(run_dir: Path, data: str | None = None) -> RunData:
    """Scan the run's data set (decoded pixels come from the cache) and map its split.json."""
    from facemask_edge.data.ingest import scan_dataset
    from facemask_edge.data.splits import load_split, split_indices

    cfg = load_config(run_dir)
    ds = scan_dataset(data or cfg["data"], size=cfg["size"], color=cfg["color"],
                      exclude_noncommercial=bool(cfg.get("exclude_noncommercial")))
    classes = load_labels(run_dir)
    if ds.classes != classes:
        raise DataError(f"classes {ds.classes} of {ds.root} differ from the run's {classes}",
                        "pass the data set the run was trained on")
    split = load_split(run_dir)
    return RunData(cfg, classes, ds.images, ds.labels, [it.path for it in ds.items],
                   split_indices(ds, split))
