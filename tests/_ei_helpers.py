"""Helpers for the Edge Impulse tests: a small data set and a tiny int8 model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from facemask_edge.testing import make_synthetic_dataset

__all__ = ["ENV_VARS", "key", "ei_env", "small_dataset", "tiny_int8_run"]

#: What could point a test at the real Edge Impulse, a proxy or another CA: cleared for every test.
ENV_VARS = ("EI_API_KEY", "EI_API_ENDPOINT", "EI_INGESTION_ENDPOINT", "HTTPS_PROXY", "HTTP_PROXY",
            "NO_PROXY", "https_proxy", "http_proxy", "no_proxy", "ALL_PROXY", "all_proxy",
            "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.fixture()
def key():
    """A fresh API key of Edge Impulse's form, forgotten by the redactor afterwards."""
    import secrets

    from facemask_edge.edge_impulse.redact import forget_secret

    k = "ei_" + secrets.token_hex(32)
    yield k
    forget_secret(k)


@pytest.fixture(autouse=True)
def ei_env(tmp_path, monkeypatch):
    """Every Edge Impulse test: its own cache, and no key, endpoint or proxy from the environment.
    (Autouse in each module that imports it.)"""
    monkeypatch.setenv("FACEMASK_EDGE_CACHE", str(tmp_path / "cache"))
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "cache"


def small_dataset(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """A small synthetic face-mask data set (JPEG, PNG, WEBP and BMP files)."""
    return make_synthetic_dataset(root, per_class=per_class, size=32, seed=seed)


def tiny_int8_run(run_dir: Path, labels=("with_mask", "without_mask"), model: bytes | None = None,
                  size: int = 16) -> Path:
    """A run folder with a full-int8 ``model_int8.tflite`` (default: 16 px RGB, input scale 1/255,
    zero point -128; tests/fixtures/ei16_rgb.tflite), ``labels.txt`` and a minimal
    ``model_card.json`` (the smallest card the run loader accepts; convert writes the full one)."""
    from _fixtures import fixture_model

    run_dir.mkdir(parents=True, exist_ok=True)
    data = model if model is not None else fixture_model("ei16_rgb")
    (run_dir / "model_int8.tflite").write_bytes(data)
    (run_dir / "labels.txt").write_text("".join(f"{x}\n" for x in labels))
    card = {"schema": 1, "model": "model_int8.tflite", "sha256": hashlib.sha256(data).hexdigest(),
            "quantization": "ptq", "labels": list(labels), "input": {"size": size, "color": "rgb"}}
    (run_dir / "model_card.json").write_text(json.dumps(card))
    return run_dir
