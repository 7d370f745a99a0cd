"""Shared fixtures: synthetic data, a tiny trained and converted run, ../shared when present."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Decoded-image cache of the tests goes to a temporary folder, not the user's cache; removed
# when the session ends (pytest_unconfigure) unless the caller chose the cache.
_OWN_CACHE = None if os.environ.get("FACEMASK_EDGE_CACHE") else \
    tempfile.mkdtemp(prefix="facemask-edge-test-cache-")
if _OWN_CACHE:
    os.environ["FACEMASK_EDGE_CACHE"] = _OWN_CACHE
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

SHARED_DATA = Path(os.environ.get("FACEMASK_EDGE_DEV_DATA", ROOT.parent / "shared" / "datasets" / "facemask-dev"))
SHARED_WEIGHTS = ROOT.parent / "shared" / "weights"


def pytest_addoption(parser):
    parser.addoption("--port", action="store", default=None,
                     help="Run hardware-marked tests against the board on this serial port.")


def pytest_unconfigure(config):
    if _OWN_CACHE:
        import shutil

        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--port"):
        return
    skip = pytest.mark.skip(reason="needs a board: pass --port PORT")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """48 synthetic faces per class (64 px, mixed formats)."""
    from facemask_edge.testing import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "faces", per_class=48, size=64)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    from facemask_edge.testing import make_tiny_backbone

    return make_tiny_backbone(tmp_path_factory.mktemp("weights") / "tiny.h5", size=32)


@pytest.fixture(scope="session")
def tiny_trained_run(tmp_path_factory, synthetic_data, tiny_backbone) -> Path:
    """A run trained on synthetic data with the tiny backbone (32 px RGB): float model only."""
    from facemask_edge.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(TrainConfig(data=str(synthetic_data), out=str(out), size=32, weights=str(tiny_backbone),
                      head_epochs=2, finetune_epochs=10, head_lr=1e-2, finetune_lr=1e-2,
                      patience=10, energy=False, seed=7, augment=False))
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_trained_run) -> Path:
    """The tiny run converted to full int8 (PTQ): model_int8.tflite and model_card.json."""
    from facemask_edge.convert.converter import convert_run

    convert_run(tiny_trained_run, qat=False, representative=40)
    return tiny_trained_run


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present (set FACEMASK_EDGE_DEV_DATA)")
    return SHARED_DATA
