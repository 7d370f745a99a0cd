"""Small file helpers every stage uses: atomic JSON, sha256 of a file.

A leaf module (numpy at most), so that anything may import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

__all__ = ["write_json", "write_atomic", "read_json", "sha256_file", "sha256_bytes"]


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
    """Write ``data`` as indented JSON atomically (:func:`write_atomic`)."""
    return write_atomic(path, json.dumps(data, indent=1, default=_default))


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
