"""``pipeline_state.json``: which stage ran with which key, and what it wrote."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from facemask_edge.pipeline.config import STAGES
from facemask_edge.progress import log
from facemask_edge.artifacts.files import sha256_file

STATE = "pipeline_state.json"


#: Training options added after run folders existed: at these defaults they are left out of the
#: train stage's key, so a run trained before the option existed stays up to date.
_KEY_NEUTRAL_DEFAULTS = {"head": "avg", "exclude_noncommercial": False, "near_duplicates": None}


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _fingerprint_tree(path: Path) -> str:
    """Cheap identity of a data set: relative names, sizes and modification times."""
    path = Path(path)
    if not path.exists():
        return "missing"
    h = hashlib.sha256()
    items = [path] if path.is_file() else _files_under(path)
    for p in items:
        st = p.stat()
        rel = p.name if p == path else p.relative_to(path).as_posix()
        h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class _State:
    """``pipeline_state.json``: per stage its key, status, outputs (with hashes), time, figures."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.path = run_dir / STATE
        self.data = {"schema": 1, "stages": {}}
        if self.path.exists():
            try:
                self.data = json.loads(self.path.read_text())
            except ValueError:
                log(f"  {self.path.name} is damaged: every stage runs again")

    def entry(self, stage: str) -> dict:
        return self.data["stages"].get(stage, {})

    def up_to_date(self, stage: str, key: str) -> bool:
        e = self.entry(stage)
        if e.get("status") != "done" or e.get("key") != key:
            return False
        for rel, sha in e.get("outputs", {}).items():
            p = self.run_dir / rel
            if not p.is_file() or sha256_file(p) != sha:
                return False
        return True

    def resumable(self, stage: str, key: str) -> bool:
        e = self.entry(stage)
        return e.get("status") == "running" and e.get("key") == key

    def mark(self, stage: str, **fields) -> None:
        e = self.data["stages"].setdefault(stage, {})
        e.update(fields)
        self.save()

    def forget_from(self, stage: str) -> None:
        for s in STAGES[STAGES.index(stage):]:
            self.data["stages"].pop(s, None)
        self.save()

    def save(self) -> None:
        from facemask_edge.artifacts.files import write_json

        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.data)
