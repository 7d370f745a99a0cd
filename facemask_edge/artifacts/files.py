"""Small file helpers every stage uses: atomic JSON, sha256 of a file.

A leaf module (numpy at most), so that anything may import it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["write_json", "read_json", "sha256_file", "sha256_bytes"]


def write_json(path: Path, data) -> Path:
    """Write ``data`` as indented JSON through a temporary file, so a kill never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_default))
    tmp.replace(path)
    return path


def _default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def read_json(path: Path):
    """The JSON content of ``path``."""
    return json.loads(Path(path).read_text())


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """sha256 of bytes in memory."""
    return hashlib.sha256(data).hexdigest()
