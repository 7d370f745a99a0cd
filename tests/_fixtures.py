"""The checked-in int8 models of tests/fixtures (made by tests/fixtures/generate.py).

Tests that need a real int8 model but not a trained one read it from here, so they run without
TensorFlow; ``models.json`` says how each model was made and which operators TensorFlow's own
interpreter found in it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"

__all__ = ["FIXTURES", "fixture_model", "tf_ops"]


def fixture_model(name: str) -> bytes:
    """The bytes of ``tests/fixtures/<name>.tflite`` (checked against models.json)."""
    data = (FIXTURES / f"{name}.tflite").read_bytes()
    want = json.loads((FIXTURES / "models.json").read_text())[name]["sha256"]
    assert hashlib.sha256(data).hexdigest() == want, f"{name}.tflite differs from models.json: regenerate"
    return data


def tf_ops(model: bytes) -> set[str]:
    """The operators TensorFlow's interpreter reported for this fixture when it was generated."""
    sha = hashlib.sha256(model).hexdigest()
    for entry in json.loads((FIXTURES / "models.json").read_text()).values():
        if entry["sha256"] == sha:
            return set(entry["tf_ops"])
    raise KeyError("not a fixture model: regenerate tests/fixtures (python tests/fixtures/generate.py)")


def run_model(run) -> tuple[bytes, dict]:
    """The shipped model's bytes and card of a run folder, through the one run loader."""
    from facemask_edge.artifacts.run import Run

    m = Run(run).shipped()
    return m.data, m.card
