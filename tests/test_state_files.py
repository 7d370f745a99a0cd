"""State files survive damage and kills (issue 12, finding 11): a bad line in results.jsonl costs
only that line, records are on disk when counted, and JSON state is replaced atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facemask_edge.validate import runner

ROOT = Path(__file__).resolve().parents[1]


def record(i: int) -> dict:
    return {"kind": "image", "i": i, "key": f"k{i}", "label": 0,
            "board": {"label": 0, "scores": [1, -1], "us": 10}, "host": {"label": 0, "scores": [1, -1]},
            "port": "p"}


def lines(*objs) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


def test_a_bad_line_costs_only_that_line(tmp_path):
    path = tmp_path / "results.jsonl"
    text = lines({"kind": "header", "n": 5}, record(0), '{"kind":"ima\x00ge", garbage', record(1),
                 '{"kind": "image", "i": "two"}', record(3), {"kind": "segment", "images": 3})
    path.write_text(text)
    header, records, segments = runner.read_results(path)
    assert header["n"] == 5 and sorted(records) == [0, 1, 3] and len(segments) == 1
    assert path.read_text() == text  # nothing after the bad line was dropped from the file
    bad: list[int] = []
    runner.read_results(path, bad)
    assert bad == [3, 5]


def test_a_torn_last_line_is_trimmed_and_the_next_record_starts_clean(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(lines({"kind": "header", "n": 3}, record(0)) + json.dumps(record(1))[:25])
    header, records, _ = runner.read_results(path)
    assert sorted(records) == [0]
    appender = runner._Appender(path)
    appender.write(record(2))
    appender.close()
    assert sorted(runner.read_results(path)[1]) == [0, 2]


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(lines({"kind": "header", "n": 3}) + json.dumps(record(0)))  # killed before "\n"
    assert sorted(runner.read_results(path)[1]) == [0]
    appender = runner._Appender(path)
    appender.write(record(1))
    appender.close()
    assert sorted(runner.read_results(path)[1]) == [0, 1]


def test_each_record_is_fsynced_before_it_counts(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    appender = runner._Appender(tmp_path / "results.jsonl")
    for i in range(3):
        appender.write(record(i))
        assert len(synced) == i + 1
    appender.close()


def test_write_json_fsyncs_file_and_folder(tmp_path, monkeypatch):
    from facemask_edge.artifacts.files import write_json

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    write_json(tmp_path / "state.json", {"a": 1})
    assert len(synced) >= 2  # the file before the rename, the folder after it
    assert json.loads((tmp_path / "state.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left


_FULL_DISK = r"""
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
what, folder = sys.argv[1], Path(sys.argv[2])
big = {"test": [["img_%05d.png" % i, 0] for i in range(500)]}
try:
    if what == "split":
        from facemask_edge.data.splits import save_split
        save_split(big, folder)
    elif what == "report":
        from facemask_edge.artifacts.files import write_json
        write_json(folder / "report.json", big)
except OSError as exc:
    print("failed:", exc.errno)
"""


@pytest.mark.parametrize("what,name", [("split", "split.json"), ("report", "report.json")])
def test_a_write_that_fails_halfway_leaves_the_old_file(tmp_path, what, name):
    """A full disk (here: a file size limit) in the middle of writing state."""
    old = {"test": [["a.png", 0]], "note": "the previous state"}
    (tmp_path / name).write_text(json.dumps(old))
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, what, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert "failed: 27" in proc.stdout, proc.stdout + proc.stderr  # EFBIG: the write did fail
    assert json.loads((tmp_path / name).read_text()) == old
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_validate_resumes_past_a_damaged_line(tmp_path, capsys):
    """A real validate run, a line damaged on disk, and the resume redoes only that image."""
    from facemask_edge.device.session import BoardSession
    from _fixtures import run_model

    from facemask_edge.device.sim import BoardSimulator
    from facemask_edge.device.testing import make_tiny_model, make_tiny_run
    from facemask_edge.device.transport import open_port
    from facemask_edge.validate.testset import load_validation_set

    run = make_tiny_run(tmp_path / "run", model=make_tiny_model())
    vset = load_validation_set(run)
    model, card = run_model(run)

    def validate_once():
        sim = BoardSimulator(model, card, camera_every=0)
        sim.start()
        try:
            session = BoardSession(open_port(sim.path, timeout=0.02), name="sim", timeout=3.0)
            return runner.validate([session], vset, model, card, tmp_path / "v")
        finally:
            sim.stop()

    first = validate_once()
    assert first["complete"]
    path = tmp_path / "v" / "results.jsonl"
    text = path.read_text().splitlines(keepends=True)
    image_lines = [n for n, line in enumerate(text) if '"kind":"image"' in line]
    damaged = image_lines[1]
    text[damaged] = text[damaged][:20] + "#" * 10 + "\n"
    path.write_text("".join(text))
    capsys.readouterr()
    second = validate_once()
    assert second["complete"] and second["validated"] == len(vset)
    assert second["board"] == first["board"]
    _, records, segments = runner.read_results(path)
    assert len(records) == len(vset) and segments[-1]["images"] == 1  # only the damaged one again
    assert f"skipped 1 unreadable line(s) ({damaged + 1})" in capsys.readouterr().err
