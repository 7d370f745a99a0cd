"""The command line: lists its commands, and bad input gives one line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facemask_edge.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "facemask_edge", *args], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, **(env or {})), cwd=ROOT)


def test_help_lists_every_command():
    res = run("--help")
    assert res.returncode == 0
    for name in COMMANDS:
        assert name in res.stdout, name


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "/no/such/folder", "--out", "/tmp/x"], "data path /no/such/folder does not exist"),
    (["convert", "/no/such/run"], "run folder /no/such/run does not exist"),
    (["qat", "/tmp"], "is not a trained run"),
    (["profile", "/no/model.tflite"], "not found"),
])
def test_errors_are_one_line(args, message, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("error: ") and message in err
    assert "\n" not in err and "Traceback" not in err


def test_verbose_shows_the_traceback():
    res = run("--verbose", "train", "--data", "/no/such/folder", "--out", "/tmp/x")
    assert res.returncode != 0 and "Traceback" in res.stderr and "DataError" in res.stderr


def test_bad_choice_names_the_valid_ones(capsys):
    code = main(["train", "--data", "x", "--out", "y", "--arch", "resnet"])
    err = capsys.readouterr().err
    assert code == 2 and "mobilenet_v1" in err


def test_train_with_planted_bad_files_reports_them(tmp_path, tiny_backbone):
    from facemask_edge.testing import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "d", per_class=16, size=40)
    (data / "with_mask" / "empty.jpg").write_bytes(b"")
    (data / "with_mask" / "text.jpg").write_text("not a jpeg")
    good = next((data / "without_mask").glob("*.jpg")).read_bytes()
    (data / "without_mask" / "cut.jpg").write_bytes(good[: len(good) // 3])
    res = run("train", "--data", str(data), "--out", str(tmp_path / "run"), "--size", "32",
              "--weights", str(tiny_backbone), "--head-epochs", "1", "--finetune-epochs", "1",
              "--no-energy")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "skipped 3 file(s)" in res.stderr
    skipped = (tmp_path / "run" / "skipped.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in skipped) == [
        "with_mask/empty.jpg", "with_mask/text.jpg", "without_mask/cut.jpg"]
    assert "test accuracy" in res.stdout


@pytest.mark.slow
def test_two_workers_train_on_loopback(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "multiworker_demo.py"),
                          "--out", str(tmp_path / "mw"), "--epochs", "1"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "worker 0" in res.stdout and "worker 1" in res.stdout
    assert (tmp_path / "mw" / "metrics.json").exists() and (tmp_path / "mw" / "model.keras").exists()
