"""The upload ledger: which image contents are already in which Edge Impulse project.

One JSON object per line, appended and ``fsync``'d as each image is confirmed, so a killed upload
loses nothing it had finished and a re-run skips it. A torn last line (the process died in the
middle of a write) is ignored on load. The ledger holds image hashes, sample ids, labels,
categories and file names; never the API key.

Where it lives: by default ``<cache>/edge-impulse/<host>[_<port>]-project-<id>.jsonl`` under the
user cache (``FACEMASK_EDGE_CACHE`` or ``~/.cache/facemask-edge``), i.e. keyed by the ingestion
host and the project the key belongs to: uploading the same folder to another project starts a
fresh ledger, uploading another folder to the same project shares it (the hashes are of the file
contents, so the same image under another path is still recognised). ``--ledger PATH`` overrides.
A lost ledger can be rebuilt from the project's sample listing (``ei status --repair``).

While an upload runs the file is locked (``flock``), so two uploads cannot write one ledger.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from facemask_edge.errors import EdgeImpulseError
from facemask_edge.paths import cache_dir

__all__ = ["Ledger", "default_ledger_path", "LEDGER_VERSION"]

LEDGER_VERSION = 1


def default_ledger_path(ingestion_endpoint: str, project_id: int | None,
                        key_id: str | None = None) -> Path:
    """``<cache>/edge-impulse/<host>[_<port>]-project-<id>.jsonl``, or ``...-key-<key_id>.jsonl``
    when the project is not known (only a custom ingestion endpoint was given, so the studio
    API was not asked)."""
    parts = urlsplit(ingestion_endpoint)
    host = (parts.hostname or "unknown").replace(":", "_")
    if parts.port:
        host += f"_{parts.port}"
    owner = f"project-{project_id}" if project_id is not None else f"key-{key_id or 'unknown'}"
    return cache_dir() / "edge-impulse" / f"{host}-{owner}.jsonl"


class Ledger:
    """Append-only record of confirmed uploads, keyed by the image's content hash.

    Use as a context manager: opening takes an exclusive lock on the file.

    Args:
        path: the ``.jsonl`` file (created with its folder if missing).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        self.torn_lines = 0
        self._lock = threading.Lock()
        self._fh = None

    def __enter__(self) -> "Ledger":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+", encoding="utf-8")
        try:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: no flock, no cross-process guard
            pass
        except OSError:
            self._fh.close()
            self._fh = None
            raise EdgeImpulseError(f"the upload ledger {self.path} is in use by another upload",
                                   "wait for it to finish, or pass another --ledger") from None
        self._load()
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _load(self) -> None:
        self._fh.seek(0)
        data = self._fh.read()
        offset = 0
        lines = data.split("\n")
        for i, line in enumerate(lines):
            start, offset = offset, offset + len(line.encode("utf-8")) + 1
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                sha = entry["sha256"]
            except (ValueError, KeyError, TypeError):
                # Only the last line can be torn by a crash: cut it off; anything else means
                # the file is not a ledger.
                if i == len(lines) - 1:
                    self.torn_lines += 1
                    self._fh.truncate(start)
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                    break
                raise EdgeImpulseError(f"{self.path} line {i + 1} is not a ledger entry",
                                       "move the file away to start a fresh ledger") from None
            self.entries[sha] = entry

    def __contains__(self, sha: str) -> bool:
        return sha in self.entries

    def get(self, sha: str) -> dict | None:
        return self.entries.get(sha)

    def __len__(self) -> int:
        return len(self.entries)

    def record(self, sha: str, **fields) -> dict:
        """Append one confirmed upload and make it durable before returning."""
        entry = {"v": LEDGER_VERSION, "sha256": sha, **fields,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock:
            if self._fh is None:
                raise RuntimeError("ledger is not open")
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.entries[sha] = entry
        return entry
