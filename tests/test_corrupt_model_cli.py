"""A damaged ``model_int8.tflite`` in a run folder: every command that reads it says so in one
``error:`` line and exits non-zero (before this, ``profile`` and ``board-sim`` printed
``error: unexpected error: unpack_from requires a buffer of at least 3356550950 bytes``).

The run folder is made from the checked-in tiny model without TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from facemask_edge.artifacts.tflite import _Table, read_tflite
from facemask_edge.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "fixtures" / "tiny_int8.tflite"
COMMANDS = {
    "profile": lambda run: ["profile", str(run), "--board", "nano33ble"],
    "board-sim": lambda run: ["board-sim", str(run), "--duration", "1"],
    "export": lambda run: ["export", str(run), "--board", "nano33ble", "--out", str(run / "fw")],
    "evaluate": lambda run: ["evaluate", str(run)],
}


def make_run(root: Path, model: bytes) -> Path:
    """A converted run folder: the tiny model, its card, labels and config."""
    info = read_tflite(model)
    inp, out = info.inputs[0], info.outputs[0]
    run = root / "run"
    run.mkdir(parents=True)
    (run / "model_int8.tflite").write_bytes(model)
    (run / "labels.txt").write_text("with_mask\nwithout_mask\n")
    (run / "config.json").write_text(json.dumps({"data": str(root / "data"), "size": 24, "color": "rgb"}))
    card = {"schema": 1, "model": "model_int8.tflite", "sha256": hashlib.sha256(model).hexdigest(),
            "flatbuffer_bytes": len(model), "quantization": "ptq",
            "input": {"shape": list(inp.shape), "dtype": "int8", "scale": inp.scale,
                      "zero_point": inp.zero_point, "size": 24, "color": "rgb"},
            "output": {"shape": list(out.shape), "dtype": "int8", "scale": out.scale,
                       "zero_point": out.zero_point},
            "labels": ["with_mask", "without_mask"], "ops": info.op_versions(), "macs": info.macs,
            "arena_bytes": 16 * 1024}
    (run / "model_card.json").write_text(json.dumps(card))
    return run


def _corruptions() -> dict[str, bytes]:
    good = TINY.read_bytes()
    rng = random.Random(11)
    flipped = bytearray(good)
    # The operator-code vector claims 3.3 billion entries: the schema bindings then asked struct
    # for a buffer of billions of bytes.
    root = _Table(good, struct.unpack_from("<I", good, 0)[0], "model")
    codes = root._target(1, "operator codes")
    flipped[codes:codes + 4] = struct.pack("<I", 0xC8000000)
    return {
        "truncated": good[:len(good) // 2],
        "empty": b"",
        "random": bytes(rng.getrandbits(8) for _ in range(3000)),
        "huge length": bytes(flipped),
    }


@pytest.mark.parametrize("command", list(COMMANDS))
def test_damaged_model_gives_one_error_line_from_the_console(tmp_path, command):
    run = make_run(tmp_path, TINY.read_bytes())
    (run / "model_int8.tflite").write_bytes(_corruptions()["truncated"])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "facemask_edge", *COMMANDS[command](run)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode not in (0, None) and res.returncode > 0, res
    assert len(err) == 1, res.stderr
    assert "model_int8.tflite is not a valid TFLite model" in err[0], err
    assert "facemask-edge convert" in err[0] and "unexpected" not in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("kind", [k for k in _corruptions() if k != "truncated"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_kind_of_damage_is_the_same_error(tmp_path, capsys, command, kind):
    run = make_run(tmp_path, TINY.read_bytes())
    (run / "model_int8.tflite").write_bytes(_corruptions()[kind])
    code = main(COMMANDS[command](run))
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("error: ") and "\n" not in err, err
    assert "is not a valid TFLite model" in err and "unexpected" not in err


def test_evaluate_refuses_a_damaged_shipped_model_even_with_good_variants(tmp_path, capsys):
    """The variants are fine, the shipped model is not: no figures, one error, no report folder."""
    run = make_run(tmp_path, TINY.read_bytes())
    (run / "model_int8_ptq.tflite").write_bytes(TINY.read_bytes())
    (run / "model_int8.tflite").write_bytes(TINY.read_bytes()[:100])
    assert main(["evaluate", str(run)]) == 1
    assert "model_int8.tflite is not a valid TFLite model" in capsys.readouterr().err
    assert not (run / "evaluation").exists()


@pytest.mark.parametrize("command", ["board-sim", "evaluate", "export"])
def test_a_model_that_crashes_tflite_micro_is_one_error_line(tmp_path, command):
    """A reader-valid model whose MEAN axis was mutated makes tflite-micro segfault (found by
    fuzzing the reader's accepted mutants). In a run folder that convert did not record, the model
    runs once in a child process before any command runs it in-process: one error line, no crash."""
    crash = (Path(__file__).parent / "fixtures" / "crash_tflm_mean_axis.tflite").read_bytes()
    run = make_run(tmp_path, crash)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "facemask_edge", *COMMANDS[command](run)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 1, res
    assert len(err) == 1 and "does not run in tflite-micro" in err[0], res.stderr
    assert "Traceback" not in res.stderr and "unexpected" not in res.stderr
