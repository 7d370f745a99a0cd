"""board-sim: the command, UART pacing, board limits, fault specs, the camera loop."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facemask_edge.artifacts.run import Run
from facemask_edge.device.session import BoardSession
from facemask_edge.device.sim import BoardSimulator, Faults, board_budget
from _fixtures import fixture_model, run_model

from facemask_edge.device.testing import make_tiny_run
from facemask_edge.device.transport import open_port
from facemask_edge.errors import BudgetError, FacemaskError, ModelError
from facemask_edge.boards import get_board


def _model_and_card(run):
    m = Run(run).shipped()
    return m.data, m.card


CLI = [sys.executable, "-m", "facemask_edge"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("sim") / "run", model=fixture_model("tiny24_rgb"))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


def test_cli_prints_the_pty_and_answers_as_the_board(run, tmp_path):
    link = tmp_path / "board0"
    proc = subprocess.Popen(CLI + ["board-sim", str(run), "--board", "esp32cam", "--baud", "921600",
                                   "--link", str(link), "--camera-every", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout.readline().strip() == str(link)
        assert os.path.realpath(link).startswith("/dev/pts/")
        session = BoardSession(open_port(str(link), timeout=0.02), timeout=5)
        info = session.handshake()
        assert (info.board, info.baud, info.width, info.channels, info.classes) == ("esp32cam", 921600, 24, 3, 2)
        assert info.firmware.startswith("board-sim") and len(info.model_sha256) == 64
        assert info.free_ram_bytes == board_budget(get_board("esp32cam"), uart=True) - info.arena_bytes
        got = []
        session.stream([(0, bytes(24 * 24 * 3))], got.append)
        session.close()
        assert len(got) == 1 and len(got[0].scores) == 2
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # a bound on shutdown, generous for a loaded CI machine
    assert proc.returncode == 0
    assert "engine c" in err and "1 images" in err
    assert not link.exists()


def test_cli_bad_fault_spec_is_one_line(run):
    proc = subprocess.run(CLI + ["board-sim", str(run), "--fault", "drop=2"], capture_output=True,
                          text=True, timeout=60, env=_env())
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: bad fault 'drop=2'") and proc.stderr.count("\n") == 1


def test_fault_spec_parsing():
    f = Faults.parse("drop=0.01, corrupt=0.02,reset-after=200,stall=1.5@30,seed=4")
    assert (f.drop, f.corrupt, f.reset_after, f.stall, f.stall_after, f.seed) == (0.01, 0.02, 200, 1.5, 30, 4)
    assert Faults.parse("stall=2").stall_after == 1
    assert Faults.parse(None).describe() == "none"
    with pytest.raises(FacemaskError, match="unknown fault 'jitter'") as err:
        Faults.parse("jitter=1")
    assert "reset-after=K" in err.value.hint
    with pytest.raises(FacemaskError, match="bad fault"):
        Faults.parse("reset-after=0")


def test_uart_pacing_matches_the_baud_rate(run):
    model, card = _model_and_card(run)
    baud = 115200
    with BoardSimulator(model, card, baud=baud, camera_every=0) as sim:
        session = BoardSession(open_port(sim.path, timeout=0.02), timeout=5)
        session.handshake()
        images = [(i, bytes([i]) * (24 * 24 * 3)) for i in range(6)]
        stats = session.stream(images, lambda r: None)
        session.close()
    wire_s = stats.stream_bytes_out * 10 / baud
    assert 0.95 * wire_s <= stats.elapsed_s <= 1.3 * wire_s + 0.1


def test_board_limits(run):
    model, card = _model_and_card(run)
    nano = get_board("nano33ble")
    sim = BoardSimulator(model, card, board=nano, camera_every=0)
    assert sim.info.board == "nano33ble" and sim.model.error == 0
    assert sim.info.free_ram_bytes == board_budget(nano, uart=False) - card["arena_bytes"]
    small_flash = dataclasses.replace(nano, flash_bytes=nano.reserved_flash_bytes + 1024)
    with pytest.raises(BudgetError, match="does not fit nano33ble's flash"):
        BoardSimulator(model, card, board=small_flash)


def test_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="convert the run first"):
        _model_and_card(tmp_path)


def test_camera_loop_prints_pred_lines_the_monitor_reads(run, tmp_path):
    model, card = _model_and_card(run)
    frames = [np.full((120, 160, 3), v, np.uint8) for v in (0, 128, 255)]
    with BoardSimulator(model, card, camera_every=0.05, camera_frames=frames) as sim:
        proc = subprocess.run(CLI + ["monitor", "--port", sim.path, "--count", "4", "--csv",
                                     str(tmp_path / "p.csv"), "--duration", "20"],
                              capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    preds = [line for line in proc.stdout.splitlines() if "scores" in line]
    assert len(preds) == 4
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "host_time,board_ms,idx,label,conf,us,scores" and len(rows) == 5
    # A black frame: what the firmware would print for it, by the stated formula.
    from facemask_edge.validate.reference import HostReference

    scores = HostReference(model).scores(bytes([0x80]) * (24 * 24 * 3))
    idx = int(np.argmax(scores))
    out = card["output"]
    conf = int(min(100, max(0, round(100 * (scores[idx] - out["zero_point"]) * out["scale"]))))
    assert any(r.endswith(" ".join(map(str, scores))) and f",{idx},{card['labels'][idx]},{conf}," in r
               for r in rows[1:])


@pytest.mark.parametrize("engine", ["c", "python"])
def test_camera_frame_on_request_is_the_preprocessed_input_and_its_answer(run, tmp_path, engine):
    """FRAME_REQ: the next camera frame comes back whole (input tensor, label, scores, time), the
    same the host model gives for that tensor; nothing is sent until asked."""
    from PIL import Image

    from facemask_edge.data.preprocess import (device_preprocess, rgb565_to_rgb888, rgb888_to_rgb565,
                                               to_int8)
    from facemask_edge.device.sim import load_camera_frames
    from facemask_edge.validate.reference import HostReference

    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.RandomState(3)
    for i in range(3):
        Image.fromarray(rng.randint(0, 256, (90, 120, 3)).astype(np.uint8)).save(folder / f"f{i}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    frames = load_camera_frames(folder)
    assert len(frames) == 3
    model, card = run_model(run)
    # The camera delivers RGB565: the firmware expands it, then preprocesses.
    wanted = {to_int8(device_preprocess(rgb565_to_rgb888(rgb888_to_rgb565(f), 120, 90), 24, "rgb")).tobytes()
              for f in frames}
    ref = HostReference(model)
    with BoardSimulator(model, card, engine=engine, camera_every=0.05, camera_frames=frames) as sim:
        session = BoardSession(open_port(sim.path, timeout=0.02), timeout=5)
        first = session.camera_frame()
        second = session.camera_frame()
        out_before = sim.stats.bytes_out
        import time
        time.sleep(0.5)  # camera keeps running, nobody asks: only PRED lines (no 27 KB frames)
        quiet = sim.stats.bytes_out - out_before
    assert sim.engine_used == engine
    for got in (first, second):
        assert (got.width, got.height, got.channels) == (24, 24, 3)
        assert got.pixels in wanted  # the exact tensor the model saw
        assert list(got.scores) == list(ref.scores(got.pixels))
        assert got.label == int(np.argmax(got.scores)) and got.micros > 0
        assert got.rgb().shape == (24, 24, 3)
    assert second.frame == (first.frame + 1) & 0xFFFF
    assert quiet < 24 * 24 * 3
    assert sim.stats.images == 0  # camera frames are not counted as validation images


def test_camera_frame_is_refused_in_a_session(run):
    model, card = run_model(run)
    with BoardSimulator(model, card, camera_every=0.05) as sim:
        session = BoardSession(open_port(sim.path, timeout=0.02), timeout=5)
        session.handshake()
        with pytest.raises(Exception, match="inside a session"):
            session.camera_frame()
        session.close()
        assert session.camera_frame(timeout=5).pixels  # after BYE the camera loop answers again


def test_board_sim_frames_option_rejects_a_folder_without_images(run, tmp_path):
    proc = subprocess.run(CLI + ["board-sim", str(run), "--frames", str(tmp_path), "--duration", "1"],
                          capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode != 0
    assert "error: no image in" in proc.stderr and "Traceback" not in proc.stderr


def test_sigint_stops_it_even_when_started_with_sigint_ignored(run, tmp_path):
    """A background job of a non-interactive shell (`board-sim ... &`, a CI runner) starts with
    SIGINT ignored; Python then never raised KeyboardInterrupt and `kill -INT` left the simulator
    serving for ever (CI hung 60 s here, then failed)."""
    link = tmp_path / "board0"
    proc = subprocess.Popen(CLI + ["board-sim", str(run), "--link", str(link), "--camera-every", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert proc.stdout.readline().strip() == str(link)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("board-sim ignored SIGINT")
    assert proc.returncode == 0 and "0 images" in err
    assert not link.exists()
