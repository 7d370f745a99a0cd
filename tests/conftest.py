"""Shared fixtures: synthetic data, a tiny trained and converted run, a board, ../shared when present.

Tiers: tests that need TensorFlow (training, conversion, Keras backbones) use the fixtures in
``TF_FIXTURES`` or ask for TensorFlow themselves; they are marked ``slow`` and skipped where
TensorFlow is not installed. Everything else runs on the checked-in int8 models of
tests/fixtures and never imports TensorFlow: ``pytest -m "not slow"`` runs without it.
``hardware`` tests talk to ``board_port``: a ``board-sim`` on a pseudo-terminal by default, the
real board with ``--port PORT``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Decoded-image cache of the tests goes to a temporary folder, not the user's cache.
os.environ.setdefault("FACEMASK_EDGE_CACHE", tempfile.mkdtemp(prefix="facemask-edge-test-cache-"))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

SHARED_DATA = Path(os.environ.get("FACEMASK_EDGE_DEV_DATA", ROOT.parent / "shared" / "datasets" / "facemask-dev"))
SHARED_WEIGHTS = ROOT.parent / "shared" / "weights"


# Fixtures that train or convert with TensorFlow: a test using one is slow and needs TensorFlow.
TF_FIXTURES = ("tiny_backbone", "tiny_trained_run", "tiny_run")


def pytest_addoption(parser):
    parser.addoption("--port", action="store", default=None,
                     help="Run the hardware-marked tests against the board on this serial port "
                          "(default: a simulated board on a pseudo-terminal).")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(name in TF_FIXTURES for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _needs_tensorflow() -> None:
    pytest.importorskip("tensorflow", reason="needs TensorFlow (a slow test)")


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """48 synthetic faces per class (64 px, mixed formats)."""
    from facemask_edge.testing import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "faces", per_class=48, size=64)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    _needs_tensorflow()
    from facemask_edge.testing import make_tiny_backbone

    return make_tiny_backbone(tmp_path_factory.mktemp("weights") / "tiny.h5", size=32)


@pytest.fixture(scope="session")
def tiny_trained_run(tmp_path_factory, synthetic_data, tiny_backbone) -> Path:
    """A run trained on synthetic data with the tiny backbone (32 px RGB): float model only."""
    _needs_tensorflow()
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

    convert_run(tiny_trained_run, quantization="ptq", representative=40)
    return tiny_trained_run


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present (set FACEMASK_EDGE_DEV_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def board_run(tmp_path_factory) -> Path:
    """A converted run folder around the checked-in 24 px model (no TensorFlow)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _fixtures import fixture_model

    from facemask_edge.device.testing import make_tiny_run

    root = tmp_path_factory.mktemp("board")
    return make_tiny_run(root / "run", data_dir=root / "data", per_class=2, model=fixture_model("tiny24_rgb"))


@pytest.fixture(scope="session")
def board_port(request, board_run, tmp_path_factory):
    """The port of a board: the real one given with ``--port``, else ``facemask-edge board-sim``
    serving ``board_run`` on a pseudo-terminal (a separate process, as a board would be)."""
    port = request.config.getoption("--port")
    if port:
        yield port
        return
    link = tmp_path_factory.mktemp("pty") / "board0"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "facemask_edge", "board-sim", str(board_run),
                             "--board", "nano33ble", "--link", str(link), "--camera-every", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline().strip()
        if line != str(link):
            proc.kill()
            pytest.fail(f"board-sim did not start: {line!r} {proc.communicate(timeout=10)[1][-500:]}")
        yield line
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
