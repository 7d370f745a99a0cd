"""Where the toolkit finds its firmware sources and keeps its cache: one answer each.

Both can be moved with an environment variable of the one ``FACEMASK_EDGE_*`` prefix:
``FACEMASK_EDGE_FIRMWARE`` (the ``firmware/`` folder, for an install without the source
checkout next to it) and ``FACEMASK_EDGE_CACHE`` (decoded images, downloads, native builds,
the Edge Impulse ledger). A leaf module: it imports nothing from the toolkit but its errors.
"""

from __future__ import annotations

import os
from pathlib import Path

from facemask_edge.errors import ToolMissing

__all__ = ["FIRMWARE_ENV", "CACHE_ENV", "firmware_dir", "cache_dir"]

FIRMWARE_ENV = "FACEMASK_EDGE_FIRMWARE"
CACHE_ENV = "FACEMASK_EDGE_CACHE"


def firmware_dir() -> Path:
    """The ``firmware/`` folder: ``$FACEMASK_EDGE_FIRMWARE`` or the source checkout's.

    Raises:
        ToolMissing: the folder has no ``common/`` sources (a set variable that points elsewhere
            is an error, not a reason to fall back silently to the checkout).
    """
    env = os.environ.get(FIRMWARE_ENV)
    path = Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "firmware"
    if not (path / "common").is_dir():
        where = f"${FIRMWARE_ENV} = {path}" if env else str(path)
        raise ToolMissing(f"firmware sources not found ({where} has no common/ folder)",
                          f"run from a source checkout of facemask-edge or set {FIRMWARE_ENV} "
                          "to its firmware/ folder")
    return path


def cache_dir() -> Path:
    """The user cache: ``$FACEMASK_EDGE_CACHE`` or ``~/.cache/facemask-edge`` (not created here)."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "facemask-edge"
