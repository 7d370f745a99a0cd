"""Hostile boards (issue 12, findings 6-9): every wait is bounded, every device number is
checked, malformed bytes are one ProtocolError, and more than 16 classes stops early.

The boards are scripted peers on real pseudo-terminals (tests/_hostile_board.py) or the board
simulator; the host side is the real session, runner and command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from _hostile_board import (ScriptedBoard, acks_unknown_images, greeting, info_for, real_board_then,
                            silent_after_hello)
from facemask_edge.device import framing as fr
from facemask_edge.device.session import BoardSession, SessionLimits
from facemask_edge.device.testing import make_tiny_model, make_tiny_run
from facemask_edge.device.transport import open_port
from facemask_edge.errors import ConversionError, DeviceTimeout, ModelError, ProtocolError

ROOT = Path(__file__).resolve().parents[1]
SIZE = 24
IMAGE = SIZE * SIZE * 3


@pytest.fixture(scope="module")
def model():
    return make_tiny_model()


@pytest.fixture(scope="module")
def sha(model):
    return hashlib.sha256(model).hexdigest()


def images(n=6):
    rng = np.random.RandomState(3)
    return [(i, rng.randint(-128, 128, IMAGE).astype(np.int8).tobytes()) for i in range(n)]


def connect(board, timeout, **kw):
    return BoardSession(open_port(board.path, timeout=0.02), name="hostile", timeout=timeout, **kw)


def stream_with_watchdog(session, items, limit):
    """Stream in a thread; the old code never returned, so the test must not wait forever."""
    box = {}

    def go():
        try:
            box["stats"] = session.stream(items, lambda r: box.setdefault("results", []).append(r))
        except BaseException as exc:
            box["exc"] = exc

    t = threading.Thread(target=go, daemon=True)
    start = time.monotonic()
    t.start()
    t.join(limit)
    return box, time.monotonic() - start, t.is_alive()


# ---- finding 6: validate never gave up ----------------------------------------------------


@pytest.mark.parametrize("behaviour", [silent_after_hello, acks_unknown_images])
def test_a_board_that_takes_the_handshake_but_not_the_images_is_given_up(sha, behaviour):
    timeout = 1.0
    with ScriptedBoard(behaviour(info_for(sha, SIZE))) as board:
        session = connect(board, timeout)
        try:
            session.handshake(expect_sha256=sha, expect_shape=(SIZE, SIZE, 3), expect_classes=2)
            box, elapsed, alive = stream_with_watchdog(session, images(), limit=10 * timeout)
        finally:
            session.port.close()
    assert not alive, "the session never gave up"
    exc = box.get("exc")
    assert isinstance(exc, DeviceTimeout), exc
    assert "answered the handshake but" in exc.message
    assert "finished no image" in exc.message or "without a result" in exc.message
    assert "\n" not in str(exc)
    assert elapsed < 3 * timeout  # the target: under 3x --timeout (the handshake is not in it)


def test_rehandshakes_and_retries_are_bounded_by_their_limits(sha):
    # A generous no-progress deadline: here only the re-handshake cap can end the session.
    limits = SessionLimits(stall_timeout=60, max_rehandshakes=1, max_retries=2)
    with ScriptedBoard(acks_unknown_images(info_for(sha, SIZE))) as board:
        session = connect(board, 0.6, limits=limits)
        try:
            session.handshake(expect_sha256=sha)
            box, elapsed, alive = stream_with_watchdog(session, images(), limit=30)
        finally:
            session.port.close()
    assert not alive
    exc = box["exc"]
    assert isinstance(exc, DeviceTimeout) and "1 re-handshake(s) in a row" in exc.message, exc
    assert session.stats.resets == 1
    hellos = sum(1 for _, k in board.events if k == fr.Msg.HELLO)
    assert hellos == 2  # the handshake and one re-handshake, no more


@pytest.mark.slow
def test_cli_validate_gives_up_on_a_silent_board_with_one_error_line(tmp_path, model, sha):
    """Acceptance 2: time to give up on a board that handshakes then goes silent."""
    run = make_tiny_run(tmp_path / "run", model=model)
    timeout = 2.0
    out = tmp_path / "v"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("FACEMASK_EDGE_STALL_TIMEOUT", None)
    with ScriptedBoard(silent_after_hello(info_for(sha, SIZE))) as board:
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "facemask_edge", "validate", str(run), "--port", board.path,
                               "--timeout", str(timeout), "--out", str(out)],
                              capture_output=True, text=True, timeout=120, env=env)
        wall = time.monotonic() - t0
        hello, bye = board.first(fr.Msg.HELLO), board.first(fr.Msg.BYE)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"error: validated 0 of \d+ images \(0 in this run\), then gave up: "
                                        r"board on \S+ answered the handshake but", lines[0]), proc.stderr
    assert "resume" in lines[0]
    assert "Traceback" not in proc.stderr
    # From the first HELLO to the BYE of the session that gave up: handshake + no-progress deadline.
    give_up = bye - hello
    print(f"validate gave up {give_up:.2f} s after its first HELLO (--timeout {timeout:g}; "
          f"command wall time {wall:.1f} s)")
    assert give_up < 3 * timeout + 1.0
    header = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert header["kind"] == "header" and header["n"] > 0  # kept for the resume


# ---- finding 7: device-reported numbers ------------------------------------------------------


def test_absurd_micros_is_a_protocol_error_not_a_wait(sha):
    # micros=0xFFFFFFFF made the old host wait 8,590 s for the next answer.
    with ScriptedBoard(real_board_then(info_for(sha, SIZE), micros=0xFFFFFFFF, images=1)) as board:
        session = connect(board, 1.0)
        try:
            session.handshake(expect_sha256=sha)
            box, elapsed, alive = stream_with_watchdog(session, images(), limit=8)
        finally:
            session.port.close()
    assert not alive, "the host is waiting on the board's word"
    exc = box["exc"]
    assert isinstance(exc, ProtocolError) and "micros=4294967295" in exc.message, exc
    assert elapsed < 2


def test_a_legal_but_long_inference_time_cannot_stretch_the_waits(sha):
    # 59 s is inside the range, but no wait grows past --timeout from it: the board that then
    # hangs is given up within the no-progress deadline.
    with ScriptedBoard(real_board_then(info_for(sha, SIZE), micros=59_000_000, images=1)) as board:
        session = connect(board, 1.0)
        try:
            session.handshake(expect_sha256=sha)
            box, elapsed, alive = stream_with_watchdog(session, images(), limit=15)
        finally:
            session.port.close()
    assert not alive
    assert isinstance(box["exc"], DeviceTimeout) and len(box.get("results", [])) == 1
    assert elapsed < 3 * 1.0 + 1


def test_ack_wait_is_bounded_even_for_the_slowest_link_a_board_may_report(sha):
    session = BoardSession(port=None, timeout=8.0)
    session.info = info_for(sha, 96, rx_window=1 << 20, baud=1200)
    session._max_infer_s = 60.0
    assert max(session._ack_timeout(b) for b in range(8)) <= 2 * 8.0


@pytest.mark.parametrize("field,value", [("micros", 0xFFFFFFFF), ("micros", 60_000_001)])
def test_result_numbers_out_of_range_are_protocol_errors(field, value):
    frame = fr.decode_frame(fr.encode_result(1, 3, 0, value, [1, 2])[1:-1])
    with pytest.raises(ProtocolError, match="micros"):
        fr.parse_board_message(frame)


@pytest.mark.parametrize("changes,what", [
    (dict(rx_window=0), "rx_window=0"), (dict(rx_window=1 << 30), "rx_window"),
    (dict(baud=1), "baud=1"), (dict(max_body=7), "max_body=7"), (dict(classes=200), "classes=200"),
    (dict(classes=0), "classes=0"), (dict(width=0), "width=0"), (dict(channels=9), "channels=9"),
])
def test_info_numbers_out_of_range_are_protocol_errors(changes, what):
    info = info_for("ab" * 32, 96, **changes)
    with pytest.raises(ProtocolError, match=what):
        fr.parse_board_message(fr.decode_frame(fr.encode_info(0, info)[1:-1]))
    # A board whose model failed may report anything: the session names its status instead.
    failed = info_for("ab" * 32, 96, status=fr.Err.MODEL_INIT, **changes)
    assert fr.parse_board_message(fr.decode_frame(fr.encode_info(0, failed)[1:-1])) == failed


# ---- finding 9: malformed greetings ------------------------------------------------------------


_FIXED = fr._INFO_FIXED.pack(0, 1, 4096, 8192, 0, SIZE, SIZE, 3, 2, 1000, 2000)


@pytest.mark.parametrize("body,what", [
    (_FIXED + b"\x02ab", "ends before its strings"),             # IndexError in the old parser
    (_FIXED + b"\x05ab", "runs past the end"),
    (_FIXED[:10], "INFO too short"),
    (fr._INFO_FIXED.pack(0, 1, 4096, 0, 0, SIZE, SIZE, 3, 2, 0, 0) + b"\x00\x00\x00", "rx_window=0"),
])
def test_a_malformed_greeting_is_one_protocol_error(body, what):
    with ScriptedBoard(greeting(body)) as board:
        session = connect(board, 1.0)
        t = time.monotonic()
        try:
            with pytest.raises(ProtocolError, match=what) as err:
                session.handshake()
        finally:
            session.port.close()
    assert time.monotonic() - t < 1.0  # at once, not after the timeout
    assert str(err.value).count("\n") == 0 and "board on hostile sent a malformed message" in err.value.message


# ---- finding 8: more than 16 classes ---------------------------------------------------------

_ENGINE_PROBE = r"""
import sys
from facemask_edge.device import framing as fr
from facemask_edge.device.board import CBoardProtocol, DeviceInfo, PyBoardProtocol

cls = {"c": CBoardProtocol, "python": PyBoardProtocol}[sys.argv[1]]
k = int(sys.argv[2])
out = []
board = cls(DeviceInfo("b", "1", "0" * 64, 4, 4, 3, k), out.append,
            lambda data: (0, [i % 100 for i in range(k)], 10))
board.set_error(0)  # a sketch that clears the error must not clear this one
board.feed(fr.hello(0) + fr.chunk(1, 0, 0, bytes(48)))
for ev in fr.FrameReader().feed(b"".join(out)):
    if isinstance(ev, fr.Frame):
        try:
            msg = fr.parse_board_message(ev)
        except fr.ProtocolError as exc:
            msg = "ProtocolError: " + exc.message
        print(type(msg).__name__ if not isinstance(msg, str) else msg,
              getattr(msg, "status", ""), getattr(msg, "code", ""))
"""


@pytest.mark.parametrize("engine", ["c", "python"])
@pytest.mark.parametrize("classes", [17, 200])
def test_a_board_with_more_classes_than_a_result_holds_refuses_to_serve(engine, classes):
    if engine == "c" and not (shutil.which("gcc") or shutil.which("cc")):
        pytest.skip("no C compiler")
    # In a subprocess: on the old code the C engine overran fe_result_t.scores (it crashed the
    # simulator at 200 classes).
    proc = subprocess.run([sys.executable, "-c", _ENGINE_PROBE, engine, str(classes)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    # INFO says the model cannot run (status 1), the image gets ERROR 1, no RESULT.
    assert proc.stdout.split("\n")[:2] == [f"Info {fr.Err.MODEL_INIT} ", f"ErrorMsg  {fr.Err.MODEL_INIT}"], proc.stdout


def test_the_simulator_refuses_a_model_with_more_than_16_classes(tmp_path):
    from _fixtures import run_model

    from facemask_edge.device.sim import BoardSimulator

    run = make_tiny_run(tmp_path / "run", model=make_tiny_model(classes=20))
    model, card = run_model(run)
    card["labels"] = [f"c{i}" for i in range(20)]
    with pytest.raises(ModelError, match="20 classes.*at most 16"):
        BoardSimulator(model, card, camera_every=0)


def test_export_refuses_more_than_16_classes(tmp_path):
    from facemask_edge.export.exporter import export_run

    run = make_tiny_run(tmp_path / "run", model=make_tiny_model(classes=20))
    card = json.loads((run / "model_card.json").read_text())
    card["labels"] = [f"c{i}" for i in range(20)]
    (run / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ConversionError, match="20 classes; the firmware carries at most 16") as err:
        export_run(run, "nano33ble", out=tmp_path / "out")
    assert "train with 1 to 16 classes" in err.value.hint


@pytest.mark.skipif(not shutil.which("gcc"), reason="no gcc")
@pytest.mark.parametrize("classes,ok", [(16, True), (17, False), (0, False)])
def test_firmware_build_stops_when_the_settings_have_too_many_classes(tmp_path, classes, ok):
    src = tmp_path / "sketch.c"
    src.write_text(f'#define FE_NUM_CLASSES {classes}\n#include "fe_protocol.h"\nint main(void) {{ return 0; }}\n')
    proc = subprocess.run(["gcc", "-std=c99", "-fsyntax-only", "-I", str(ROOT / "firmware" / "common"), str(src)],
                          capture_output=True, text=True)
    assert (proc.returncode == 0) == ok, proc.stderr
    if not ok:
        assert "FE_NUM_CLASSES must be 1..FE_MAX_CLASSES" in proc.stderr
