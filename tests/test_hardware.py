"""A board on a serial port: the simulator's pty by default, the real board with ``--port PORT``.

The same tests run against both, so what the simulator is checked for here is what a flashed
board is checked for on the bench: ``pytest -m hardware --port /dev/ttyACM0``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from facemask_edge.device.session import BoardSession
from facemask_edge.device.transport import open_port
from facemask_edge.validate.reference import HostReference

pytestmark = pytest.mark.hardware


@pytest.fixture()
def session(board_port):
    port = open_port(board_port, timeout=0.02)
    s = BoardSession(port, timeout=10)
    try:
        yield s
    finally:
        s.close()
        port.close()  # (a session given an open port leaves it open)


def test_handshake_describes_the_board_and_its_model(session, request):
    info = session.handshake()
    assert info.board in ("nano33ble", "esp32cam") and info.firmware
    assert info.width > 0 and info.channels in (1, 3) and info.classes >= 2
    assert len(info.model_sha256) == 64 and int(info.model_sha256, 16) >= 0
    assert 0 < info.arena_bytes and info.free_ram_bytes >= 0
    if not request.config.getoption("--port"):
        assert info.firmware.startswith("board-sim") and (info.width, info.channels, info.classes) == (24, 3, 2)


def test_one_image_round_trip_matches_the_host(session, board_run):
    info = session.handshake()
    rng = np.random.RandomState(0)
    image = rng.randint(-128, 128, info.height * info.width * info.channels).astype(np.int8).tobytes()
    got = []
    session.stream([(7, image)], got.append)
    assert len(got) == 1 and len(got[0].scores) == info.classes
    model = (board_run / "model_int8.tflite").read_bytes()
    if info.model_sha256 == hashlib.sha256(model).hexdigest():  # the board runs this model: bit-exact
        assert list(got[0].scores) == HostReference(model).scores(image)
