"""Helpers for the Edge Impulse tests: a small data set and a tiny int8 model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from facemask_edge.testing import make_synthetic_dataset

__all__ = ["small_dataset", "tiny_int8_run"]


def small_dataset(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """A small synthetic face-mask data set (JPEG, PNG, WEBP and BMP files)."""
    return make_synthetic_dataset(root, per_class=per_class, size=32, seed=seed)


def tiny_int8_run(run_dir: Path, labels=("with_mask", "without_mask")) -> Path:
    """A run folder with a full-int8 ``model_int8.tflite`` (16 px RGB, input scale 1/255, zero point
    -128; tests/fixtures/ei16_rgb.tflite), ``labels.txt`` and a minimal ``model_card.json``."""
    from _fixtures import fixture_model

    size, channels = 16, 3

    run_dir.mkdir(parents=True, exist_ok=True)
    data = fixture_model("ei16_rgb")
    (run_dir / "model_int8.tflite").write_bytes(data)
    (run_dir / "labels.txt").write_text("".join(f"{x}\n" for x in labels))
    # The smallest card the run loader accepts (convert writes the full one).
    card = {"schema": 1, "model": "model_int8.tflite", "sha256": hashlib.sha256(data).hexdigest(),
            "quantization": "ptq", "labels": list(labels),
            "input": {"size": size, "color": "grayscale" if channels == 1 else "rgb"}}
    (run_dir / "model_card.json").write_text(json.dumps(card))
    return run_dir
