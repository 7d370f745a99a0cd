"""validate: the test split on simulated boards, resumable, sharded, with a full report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facemask_edge.device.session import BoardSession
from facemask_edge.device.sim import BoardSimulator, Faults
from _fixtures import fixture_model, run_model

from facemask_edge.device.testing import make_tiny_run
from facemask_edge.device.transport import open_port
from facemask_edge.errors import DataError
from facemask_edge.validate.runner import read_results, validate
from facemask_edge.validate.testset import load_validation_set


CLI = [sys.executable, "-m", "facemask_edge"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    return make_tiny_run(root / "run", data_dir=root / "data", per_class=30, model=fixture_model("tiny24_rgb"))


@pytest.fixture(scope="module")
def vset(run):
    return load_validation_set(run)


def sims(run, n=1, **kw):
    model, card = run_model(run)
    kw.setdefault("camera_every", 0)
    out = [BoardSimulator(model, card, **kw) for _ in range(n)]
    for s in out:
        s.start()
    return out


def sessions_for(boards, timeout=3.0):
    return [BoardSession(open_port(b.path, timeout=0.02), name=f"sim{i}", timeout=timeout)
            for i, b in enumerate(boards)]


def run_validate(run, vset, out, boards, **kw):
    model, card = run_model(run)
    try:
        return validate(sessions_for(boards), vset, model, card, out, **kw)
    finally:
        for b in boards:
            b.stop()


def test_test_split_is_bit_exact_and_fully_reported(run, vset, tmp_path):
    assert len(vset) == 24 and vset.source == "test split"
    report = run_validate(run, vset, tmp_path, sims(run))
    assert report["complete"] and report["validated"] == 24
    assert report["agreement"]["bit_exact"] == 1.0 and report["agreement"]["max_score_diff"] == 0
    assert report["board"]["accuracy"] == report["host"]["accuracy"]
    assert sum(map(sum, report["board"]["confusion"])) == 24
    assert report["latency_ms"]["p50"] > 0 and report["latency_ms"]["max"] >= report["latency_ms"]["p95"]
    link = report["link"]
    assert link["images"] == 24 and link["images_per_s"] > 0 and link["payload_efficiency"] > 0.9
    assert link["wire_bytes_per_image"] < 24 * 24 * 3 * 1.1
    for name in ("report.json", "report.md", "confusion.png", "results.jsonl"):
        assert (tmp_path / name).stat().st_size > 0
    md = (tmp_path / "report.md").read_text()
    assert "Bit-exact agreement: 100.00%" in md and "images/s" in md
    assert json.loads((tmp_path / "report.json").read_text())["validated"] == 24
    header, records, segments = read_results(tmp_path / "results.jsonl")
    assert header["n"] == 24 and sorted(records) == list(range(24)) and len(segments) == 1
    assert all(r["key"] == vset.keys[i] for i, r in records.items())


def test_faults_give_the_same_results_and_are_counted(run, vset, tmp_path):
    clean = run_validate(run, vset, tmp_path / "clean", sims(run))
    faults = Faults.parse("drop=0.03,corrupt=0.03,reset-after=10,seed=1")
    report = run_validate(run, vset, tmp_path / "faulty", sims(run, faults=faults))
    _, a, _ = read_results(tmp_path / "clean" / "results.jsonl")
    _, b, _ = read_results(tmp_path / "faulty" / "results.jsonl")
    lines = (tmp_path / "faulty" / "results.jsonl").read_text().splitlines()
    assert sum('"kind":"image"' in line for line in lines) == 24  # none duplicated
    assert {i: r["board"]["scores"] for i, r in a.items()} == {i: r["board"]["scores"] for i, r in b.items()}
    assert report["board"] == clean["board"] and report["agreement"]["bit_exact"] == 1.0
    assert report["link"]["resets"] == 1 and report["link"]["retries"] > 0
    assert "1 board resets handled" in (tmp_path / "faulty" / "report.md").read_text()


def test_two_boards_share_the_work_and_agree_with_one(run, vset, tmp_path):
    one = run_validate(run, vset, tmp_path / "one", sims(run))
    # Paced links (about 0.1 s an image), so one board cannot finish the set while the other is
    # still saying hello on a loaded machine.
    two = run_validate(run, vset, tmp_path / "two", sims(run, 2, baud=230400))
    assert set(two["per_port_images"]) == {"sim0", "sim1"}
    assert all(n > 0 for n in two["per_port_images"].values())
    for key in ("board", "host", "agreement", "validated", "complete"):
        assert two[key] == one[key]


def test_a_board_that_dies_hands_its_images_to_the_other(run, vset, tmp_path):
    good, bad = sims(run, 2, baud=230400)
    model, card = run_model(run)
    sessions = [BoardSession(open_port(good.path, timeout=0.02), name="good", timeout=1.0),
                BoardSession(open_port(bad.path, timeout=0.02), name="bad", timeout=1.0)]
    import threading

    killer = threading.Timer(0.3, bad.stop)
    killer.start()
    try:
        report = validate(sessions, vset, model, card, tmp_path)
    finally:
        killer.cancel()
        good.stop()
        bad.stop()
    assert report["complete"] and report["agreement"]["bit_exact"] == 1.0
    assert "bad" in report["link"]["errors"]
    assert report["per_port_images"]["good"] > report["per_port_images"].get("bad", 0)


def test_other_results_are_not_mixed_in(run, vset, tmp_path):
    run_validate(run, vset, tmp_path, sims(run))
    other = load_validation_set(run, data=Path(vset.data_root))
    with pytest.raises(DataError, match="another model or image set"):
        run_validate(run, other, tmp_path, sims(run))


def test_a_line_cut_by_a_kill_is_dropped(tmp_path):
    path = tmp_path / "results.jsonl"
    rec = ('{"kind":"image","i":0,"key":"a","label":0,"board":{"label":0,"scores":[1],"us":5},'
           '"host":{"label":0,"scores":[1]}}')
    path.write_text('{"kind":"header","n":2}\n' + rec + '\n{"kind":"ima')
    header, records, _ = read_results(path)
    assert header["n"] == 2 and list(records) == [0]
    assert path.read_text().endswith('"scores":[1]}}\n')


def test_data_folder_validates_every_image(run, tmp_path):
    data = Path(json.loads((run / "config.json").read_text())["data"])
    vs = load_validation_set(run, data=data, limit=15)
    assert len(vs) == 15 and vs.source == str(data)
    report = run_validate(run, vs, tmp_path, sims(run))
    assert report["validated"] == 15 and report["agreement"]["bit_exact"] == 1.0


# ---- the command line ----


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


def test_cli_missing_port_is_one_line(run):
    proc = subprocess.run(CLI + ["validate", str(run), "--port", "/dev/ttyFACEMASK_NOPE"],
                          capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("error: port /dev/ttyFACEMASK_NOPE does not exist")


@pytest.mark.slow
def test_cli_kill_and_resume_finishes_without_redoing(run, tmp_path):
    sim = subprocess.Popen(CLI + ["board-sim", str(run), "--baud", "57600", "--camera-every", "0.2"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())
    try:
        port = sim.stdout.readline().strip()
        out = tmp_path / "v"
        cmd = CLI + ["validate", str(run), "--port", port, "--out", str(out), "--timeout", "3"]
        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
        results = out / "results.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if results.exists() and results.read_text().count('"kind":"image"') >= 5:
                break
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        done_before = results.read_text().count('"kind":"image"')
        assert 5 <= done_before < 24
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env())
        assert second.returncode == 0, second.stderr
        assert "24/24 images" in second.stdout and "100.00%" in second.stdout
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(timeout=60)  # a bound on shutdown, generous for a loaded CI machine
    header, records, segments = read_results(results)
    lines = results.read_text().splitlines()
    assert sum('"kind":"image"' in line for line in lines) == 24
    assert segments[-1]["images"] == 24 - done_before  # only the rest was streamed


@pytest.mark.slow
def test_tflite_builtin_ref_reference_agrees_bit_exactly(run, vset, tmp_path):
    pytest.importorskip("tensorflow", reason="TFLite's reference kernels come with TensorFlow")
    small = load_validation_set(run, limit=8)
    report = run_validate(run, small, tmp_path, sims(run), reference="tflite")
    assert report["reference"] == "tflite" and report["agreement"]["bit_exact"] == 1.0


def test_a_validation_that_never_started_reports_the_failure_not_zero_accuracy(run, vset, tmp_path):
    """Issue 11, behaviour 5: a board with another model refuses the handshake; the report says
    the validation failed, why and how far it got, and carries no accuracy figures."""
    from facemask_edge.errors import ModelMismatch

    model, card = run_model(run)
    other = BoardSimulator(fixture_model("sketch_rgb32"), card, camera_every=0)
    other.start()
    try:
        with pytest.raises(ModelMismatch):
            validate(sessions_for([other]), vset, model, card, tmp_path)
    finally:
        other.stop()
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["status"] == "failed" and rep["validated"] == 0 and not rep["complete"]
    assert rep["failure"]["stage"] == "connecting to the board(s)" and "model" in rep["failure"]["error"]
    assert rep["board"] is None and rep["host"] is None and rep["agreement"] is None
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# On-device validation: FAILED")
    assert "0 of 24 images validated; no figures" in md
    assert "0.00" not in md and "accuracy" not in md.lower()


def test_a_validation_cut_short_says_how_far_it_got(run, vset, tmp_path):
    """The only board dies after a few images: the report is marked failed, with the images
    validated before, and its figures are for those images only."""
    import threading

    from facemask_edge.errors import DeviceError

    (board,) = sims(run, 1, baud=115200)
    model, card = run_model(run)
    killer = threading.Timer(0.4, board.stop)
    killer.start()
    try:
        with pytest.raises(DeviceError, match="then gave up"):
            validate([BoardSession(open_port(board.path, timeout=0.02), name="b", timeout=1.0)],
                     vset, model, card, tmp_path)
    finally:
        killer.cancel()
        board.stop()
    rep = json.loads((tmp_path / "report.json").read_text())
    n = rep["validated"]
    assert rep["status"] == "failed" and 0 < n < 24 and rep["failure"]["validated"] == n
    assert rep["failure"]["stage"] == "streaming images"
    md = (tmp_path / "report.md").read_text()
    assert f"{n} of 24 images validated (figures below are for those only)" in md
