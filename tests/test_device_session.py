"""The host session against simulated boards on real ptys: streaming, faults, and clear errors."""

from __future__ import annotations

import dataclasses
import os
import pty
import threading
import time
import tty
from types import SimpleNamespace

import numpy as np
import pytest

from facemask_edge.artifacts.run import Run
from facemask_edge.device import framing as fr
from facemask_edge.device.session import BoardSession
from facemask_edge.device.sim import BoardSimulator, Faults
from _fixtures import fixture_model

from facemask_edge.device.testing import make_tiny_model, make_tiny_run
from facemask_edge.device.transport import choose_port, list_candidates, open_port
from facemask_edge.errors import DeviceError, DeviceTimeout, ModelMismatch, ProtocolError
from facemask_edge.boards import get_board
from facemask_edge.validate.reference import HostReference


def _model_and_card(run):
    m = Run(run).shipped()
    return m.data, m.card


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("proto") / "run", model=fixture_model("tiny24_rgb"))


@pytest.fixture(scope="module")
def model_card(run):
    return _model_and_card(run)


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(7)
    return [(i, rng.randint(-128, 128, 24 * 24 * 3).astype(np.int8).tobytes()) for i in range(80)]


@pytest.fixture(scope="module")
def expected(model_card, images):
    ref = HostReference(model_card[0])
    return {k: ref.scores(d) for k, d in images}


def start_sim(model_card, **kw):
    model, card = model_card
    kw.setdefault("camera_every", 0)
    sim = BoardSimulator(model, card, **kw)
    sim.start()
    return sim


def connect(sim, timeout=3.0, **kw):
    return BoardSession(open_port(sim.path, timeout=0.02), timeout=timeout, **kw)


def stream_all(session, sim, images):
    got = {}

    def on(r):
        assert r.key not in got, f"image {r.key} answered twice"
        got[r.key] = r

    session.handshake(expect_sha256=sim.sha256, expect_shape=(24, 24, 3), expect_classes=2)
    stats = session.stream(list(images), on)
    session.close()
    return got, stats


@pytest.mark.parametrize("engine", ["c", "python"])
def test_streamed_results_equal_the_host_reference(model_card, images, expected, engine):
    sim = start_sim(model_card, engine=engine)
    try:
        assert sim.engine_used == engine
        got, stats = stream_all(connect(sim), sim, images[:40])
    finally:
        sim.stop()
    assert sorted(got) == list(range(40))
    assert all(list(got[k].scores) == expected[k] for k in got)
    assert all(got[k].label == int(np.argmax(expected[k])) for k in got)
    assert stats.images == 40 and stats.retries == 0 and stats.resets == 0
    assert stats.payload_bytes == 40 * 24 * 24 * 3
    assert sim.stats.images == 40


def test_faults_lose_and_duplicate_nothing(model_card, images, expected):
    faults = Faults.parse("drop=0.04,corrupt=0.04,reset-after=25,seed=3")
    sim = start_sim(model_card, faults=faults, board=get_board("nano33ble"))
    try:
        got, stats = stream_all(connect(sim), sim, images)
    finally:
        sim.stop()
    assert sorted(got) == [k for k, _ in images]
    assert all(list(got[k].scores) == expected[k] for k in got)
    s = sim.stats
    assert s.dropped_in + s.dropped_out > 0 and s.corrupted_in + s.corrupted_out > 0
    assert s.resets == 1 and stats.resets == 1
    assert stats.retries > 0


def test_a_stalled_board_is_waited_for(model_card, images, expected):
    sim = start_sim(model_card, faults=Faults.parse("stall=1.2@3"), baud=460800)
    try:
        got, stats = stream_all(connect(sim, timeout=4), sim, images[:8])
    finally:
        sim.stop()
    assert sorted(got) == list(range(8))
    assert all(list(got[k].scores) == expected[k] for k in got)
    assert stats.timeouts >= 1 and sim.stats.stalls == 1


def test_pipelining_keeps_the_uart_busy(model_card, images):
    baud = 921600
    sim = start_sim(model_card, baud=baud)
    try:
        _, stats = stream_all(connect(sim), sim, images[:60])
    finally:
        sim.stop()
    line_busy = stats.stream_bytes_out * 10 / baud / stats.elapsed_s
    efficiency = stats.payload_bytes / (stats.bytes_out + stats.bytes_in)
    assert line_busy > 0.9, line_busy
    assert efficiency > 0.9, efficiency
    assert stats.images / stats.elapsed_s > 0.85 * (baud / 10) / (24 * 24 * 3 + 60)


@pytest.mark.slow
def test_multi_chunk_images_keep_the_uart_busy(tmp_path):
    """64x64x3 images take five chunks each: the window must hold several chunks in flight."""
    model = make_tiny_model(size=64)
    run = make_tiny_run(tmp_path / "run", size=64, model=model, per_class=4)
    baud = 921600
    rng = np.random.RandomState(1)
    images = [(i, rng.randint(-128, 128, 64 * 64 * 3).astype(np.int8).tobytes()) for i in range(16)]
    sim = start_sim(_model_and_card(run), baud=baud)
    try:
        session = connect(sim)
        got, stats = {}, None
        session.handshake()
        chunk, window = session._limits()
        assert 3 * fr.wire_size(chunk + fr.CHUNK_HEADER) <= window and chunk > 2000
        stats = session.stream(images, lambda r: got.setdefault(r.key, r))
        session.close()
    finally:
        sim.stop()
    assert len(got) == 16 and stats.chunks_sent == 16 * -(-64 * 64 * 3 // chunk)
    line_busy = stats.stream_bytes_out * 10 / baud / stats.elapsed_s
    assert line_busy > 0.9, line_busy
    assert stats.payload_bytes / (stats.bytes_out + stats.bytes_in) > 0.97


def test_camera_lines_before_the_handshake_are_ignored(model_card, images, expected):
    sim = start_sim(model_card, camera_every=0.02)
    try:
        time.sleep(0.3)  # the "camera loop" prints PRED lines into the port
        got, stats = stream_all(connect(sim), sim, images[:5])
    finally:
        sim.stop()
    assert all(list(got[k].scores) == expected[k] for k in got) and len(got) == 5
    assert sim.stats.camera_frames > 0


def test_socket_url_reaches_a_board_behind_a_tcp_bridge(model_card, images, expected):
    """socket://host:port (a ser2net-style bridge) works like a local port."""
    import select
    import socket

    sim = start_sim(model_card)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    fd = os.open(sim.path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    done = threading.Event()

    def bridge():
        conn, _ = server.accept()
        while not done.is_set():
            r, _, _ = select.select([conn, fd], [], [], 0.05)
            if conn in r:
                data = conn.recv(65536)
                if not data:
                    break
                os.write(fd, data)
            if fd in r:
                conn.sendall(os.read(fd, 65536))
        conn.close()

    t = threading.Thread(target=bridge, daemon=True)
    t.start()
    try:
        url = f"socket://127.0.0.1:{server.getsockname()[1]}"
        session = BoardSession(open_port(url, timeout=0.02), name=url, timeout=3)
        got, _ = stream_all(session, sim, images[:10])
    finally:
        done.set()
        t.join(timeout=2)
        os.close(fd)
        server.close()
        sim.stop()
    assert sorted(got) == list(range(10))
    assert all(list(got[k].scores) == expected[k] for k in got)


# ---- errors: one line, within the timeout ----


def test_missing_port_fails_at_once():
    t = time.monotonic()
    with pytest.raises(DeviceError, match="does not exist"):
        open_port("/dev/ttyFACEMASK_NOPE")
    assert time.monotonic() - t < 0.5


class _Pty:
    """The other end of a pty, doing whatever a test needs (nothing, noise, text)."""

    def __init__(self, feed=None):
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        self.slave = slave
        self.path = os.ttyname(slave)
        self.stop = threading.Event()
        if feed:
            threading.Thread(target=self._run, args=(feed,), daemon=True).start()

    def _run(self, feed):
        os.set_blocking(self.master, False)
        while not self.stop.is_set():
            try:
                os.read(self.master, 65536)
            except BlockingIOError:
                pass
            try:
                os.write(self.master, feed())
            except BlockingIOError:
                pass
            time.sleep(0.01)

    def close(self):
        self.stop.set()
        time.sleep(0.03)
        os.close(self.master)
        os.close(self.slave)


def _timed_handshake(path, timeout=1.0):
    session = BoardSession(open_port(path, timeout=0.02), timeout=timeout)
    t = time.monotonic()
    try:
        session.handshake()
    finally:
        elapsed = time.monotonic() - t
        session.port.close()
    return elapsed


def test_a_board_that_never_answers_times_out():
    p = _Pty()
    try:
        with pytest.raises(DeviceTimeout, match="no answer") as err:
            _timed_handshake(p.path)
    finally:
        p.close()
    assert "\n" not in str(err.value)


def test_random_bytes_give_a_protocol_error_in_time():
    rng = np.random.RandomState(0)
    p = _Pty(lambda: rng.randint(0, 256, 400).astype(np.uint8).tobytes())
    t = time.monotonic()
    try:
        with pytest.raises(ProtocolError, match="none of them a protocol frame"):
            _timed_handshake(p.path)
    finally:
        p.close()
    assert time.monotonic() - t < 2.0


def test_other_firmware_printing_text_is_named():
    p = _Pty(lambda: b"Hello from some other sketch\r\n")
    try:
        with pytest.raises(DeviceTimeout, match="printed text") as err:
            _timed_handshake(p.path)
    finally:
        p.close()
    assert "Hello from some other sketch" in str(err.value)


def test_loopback_is_recognised():
    session = BoardSession(open_port("loop://", timeout=0.02), timeout=0.8)
    with pytest.raises(DeviceTimeout, match="echoes"):
        session.handshake()


def test_wrong_model_on_the_board_is_refused(model_card):
    sim = start_sim(model_card)
    try:
        session = connect(sim)
        t = time.monotonic()
        with pytest.raises(ModelMismatch, match="runs model") as err:
            session.handshake(expect_sha256="0" * 64)
        assert time.monotonic() - t < 1.5
    finally:
        sim.stop()
    assert "flash" in err.value.hint


def test_a_board_whose_arena_is_too_small_says_so(model_card):
    tiny_board = dataclasses.replace(get_board("nano33ble"), ram_bytes=64 * 1024 + 50 * 1024 + 2000)
    sim = start_sim(model_card, board=tiny_board)
    try:
        assert sim.model.error == 2
        with pytest.raises(DeviceError, match="AllocateTensors failed"):
            connect(sim).handshake(expect_sha256=sim.sha256)
    finally:
        sim.stop()


# ---- finding the board ----


def _port(device, vid, pid, desc="USB device"):
    return SimpleNamespace(device=device, vid=vid, pid=pid, description=desc)


def test_choose_port_by_usb_ids():
    ports = [_port("/dev/ttyS0", None, None), _port("/dev/ttyACM0", 0x2341, 0x805A, "Nano 33 BLE"),
             _port("/dev/ttyUSB3", 0x0403, 0x6001)]
    assert choose_port(ports) == "/dev/ttyACM0"
    assert list_candidates(ports)[0].kind == "nano33ble"


def test_choose_port_lists_candidates_when_ambiguous():
    ports = [_port("/dev/ttyACM0", 0x2341, 0x805A), _port("/dev/ttyUSB0", 0x10C4, 0xEA60, "CP2102")]
    with pytest.raises(DeviceError) as err:
        choose_port(ports)
    assert "/dev/ttyACM0" in str(err.value) and "/dev/ttyUSB0" in str(err.value)
    assert "--port" in err.value.hint
    with pytest.raises(DeviceError, match="no board found"):
        choose_port([_port("/dev/ttyS0", None, None)])
