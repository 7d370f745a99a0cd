"""A new user's first hour (issue 17): quiet logs, reproducible runs, ``predict``, small things."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facemask_edge.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_TFLITE = ROOT / "tests" / "fixtures" / "tiny_int8.tflite"
# The demo with shorter training (as in test_pipeline), through the real command line.
FAST_DEMO = ["--head-epochs", "1", "--finetune-epochs", "3", "--qat-epochs", "1"]

# A line from TensorFlow, absl, oneDNN or h5py rather than from the toolkit.
LIBRARY_LINE = re.compile(
    r"^[EWIF]\d{4} \d\d:\d\d:\d\d"           # absl's C++ log prefix (cuInit, node_def_util, ...)
    r"|absl::|^WARNING:(tensorflow|absl)|^INFO:tensorflow"
    r"|oneDNN|onednn|cuInit|CUDA|This TensorFlow binary"
    r"|h5py|HDF5|legacy format|Compiled the loaded model"
    r"|(User|Deprecation|Future|Runtime)Warning|site-packages/", re.I)


def library_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if LIBRARY_LINE.search(line)]


# ---- small things ------------------------------------------------------------------------------

def test_counts_ranges_and_seconds_read_naturally():
    from facemask_edge.fmt import plural, seconds, span

    assert plural(1, "epoch") == "1 epoch" and plural(3, "epoch") == "3 epochs"
    assert plural(0, "epoch") == "0 epochs"
    assert span(12.7, 12.7, digits=1) == "12.7" and span(4.8, 9.6, digits=1) == "4.8-9.6"
    assert span(64.2, 128.4) == "64-128" and span(26.0, 26.4) == "26"
    assert seconds(26.0) == "26.0"


def test_result_blocks_show_seconds_to_a_tenth(capsys):
    from facemask_edge.cli._common import echo_json_summary

    echo_json_summary("trained x", {"test accuracy": 0.9, "wall seconds": 26.0, "seconds": 3.25})
    out = capsys.readouterr().out
    assert "0.9000" in out
    assert re.search(r"wall seconds\s+26\.0$", out, re.M) and "26.0000" not in out
    assert re.search(r"seconds\s+3\.2$", out, re.M)


def test_profile_notes_show_one_value_for_an_exact_cycles_per_mac(capsys):
    main(["profile", str(FIXTURE_TFLITE)])
    out = capsys.readouterr().out
    assert "esp32cam: 12.7 cycles/MAC" in out
    assert "12.7-12.7" not in out and "4.8-9.6 cycles/MAC" in out


def test_evaluation_table_shows_a_drop_as_a_negative_change():
    from facemask_edge.convert.evaluate import evaluation_markdown

    m = {"accuracy": 0.8, "f1": 0.8, "precision": 0.8, "recall": 0.8}
    report = {"images": 30, "set": "test split", "float": {**m, "accuracy": 0.9333},
              "shipped": {"model": "model_int8.tflite", "quantization": "ptq", "sha256": "0" * 64,
                          "tflm": {**m, "drop_vs_float_points": 13.333},
                          "tflite_ref": {**m, "drop_vs_float_points": -1.667},
                          "runtimes_bit_exact_rate": 1.0, "runtimes_label_agreement": 1.0,
                          "runtimes_max_score_diff": 0},
              "variants": {}}
    md = evaluation_markdown(report)
    assert "change vs float (points)" in md and "drop vs float" not in md
    assert "| -13.33 |" in md and "+13.33" not in md
    assert "| +1.67 |" in md


def test_sweep_dry_run_prints_readable_lines_not_dicts(tiny_backbone, capsys):
    assert main(["sweep", "--out", "unused", "--weights", str(tiny_backbone), "--fast", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "{" not in out and "}" not in out and "'" not in out
    assert re.search(r"^tiny-b5-64-rgb: .*size 64, color rgb", out, re.M)
    assert re.search(r"configurations; epochs at most: head \d+, finetune \d+, qat \d+$", out, re.M)


def test_the_test_suite_removes_its_temporary_cache(tmp_path):
    """conftest makes a facemask-edge-test-cache-* folder per session and removes it at the end."""
    env = {k: v for k, v in os.environ.items() if k != "FACEMASK_EDGE_CACHE"}
    env["TMPDIR"] = str(tmp_path)
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "--co", "-p", "no:cacheprovider",
                          "tests/test_splits.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert not list(tmp_path.glob("facemask-edge-test-cache-*"))


# ---- predict -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_predict_gives_evaluates_tflm_answer_for_every_image(tiny_run, synthetic_data, tmp_path, capsys):
    from facemask_edge.artifacts.run import Run
    from facemask_edge.convert.evaluate import _eval_set, evaluate_run
    from facemask_edge.convert.runtimes import TFLMRunner
    from facemask_edge.data.preprocess import to_int8

    assert main(["predict", str(tiny_run), str(synthetic_data), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    got = {Path(p["path"]).relative_to(synthetic_data).as_posix(): p for p in doc["images"]}
    assert all("error" not in p for p in got.values())

    # evaluate's own tflite-micro path over the same folder, image by image
    x, y, classes, _, paths, _ = _eval_set(Run(tiny_run), str(synthetic_data))
    scores = TFLMRunner(tiny_run / "model_int8.tflite").run_batch(to_int8(x))
    assert sorted(got) == sorted(paths)
    for path, s, truth in zip(paths, scores, y):
        p = got[path]
        assert p["raw"] == s.tolist(), path
        assert p["label"] == classes[int(s.argmax())] and p["index"] == int(s.argmax())
        assert p["confidence"] == max(p["scores"].values())
    # and the report evaluate writes: the same accuracy, the same misclassified images and scores
    report = evaluate_run(tiny_run, data=str(synthetic_data), out=tmp_path / "ev")
    tflm = report["shipped"]
    acc = np.mean([got[pth]["index"] == t for pth, t in zip(paths, y)])
    assert acc == pytest.approx(tflm["tflm"]["accuracy"])
    for m in tflm["misclassified_tflm"]:
        assert got[m["path"]]["raw"] == m["scores"] and got[m["path"]]["label"] == m["predicted"]


@pytest.mark.slow
def test_evaluate_on_a_folder_with_an_extra_class_leaves_it_out(tiny_run, synthetic_data, tmp_path, capsys):
    """A two-class run evaluated on a set with a third class folder (e.g. facemask-3class): the
    third class is left out and said so; the other images keep their labels in the run's order.
    A folder that lacks one of the run's classes is one line naming it."""
    import shutil

    from facemask_edge.artifacts.run import Run
    from facemask_edge.convert.evaluate import _eval_set
    from facemask_edge.testing import make_synthetic_dataset

    run = Run(tiny_run)
    three = tmp_path / "three"
    for c in ("with_mask", "without_mask"):
        shutil.copytree(synthetic_data / c, three / c)
    other = make_synthetic_dataset(tmp_path / "other", per_class=5, size=64, seed=7)
    shutil.copytree(other / "with_mask", three / "mask_weared_incorrect")  # sorts first
    x2, y2, _, _, p2, _ = _eval_set(run, str(synthetic_data))
    x3, y3, classes, what, p3, _ = _eval_set(run, str(three))
    assert classes == run.labels and what.endswith("but mask_weared_incorrect")
    assert sorted(zip(p3, y3.tolist())) == sorted(zip(p2, y2.tolist())) and len(x3) == len(x2)
    assert "leaving out 5 image(s) of mask_weared_incorrect" in capsys.readouterr().err

    shutil.rmtree(three / "without_mask")
    assert main(["evaluate", str(tiny_run), "--data", str(three), "--out", str(tmp_path / "ev")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "no class folder for without_mask" in err[-1]


@pytest.mark.slow
def test_predict_bad_files_get_their_own_line_and_the_rest_continue(tiny_run, synthetic_data, tmp_path, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image\n")
    good = sorted((synthetic_data / "with_mask").iterdir())[0]
    assert main(["predict", str(tiny_run), str(bad), str(good), str(tmp_path / "missing.png")]) == 1
    cap = capsys.readouterr()
    assert cap.out.startswith(f"{good}: ") and len(cap.out.strip().splitlines()) == 1
    assert f"error: {bad}: not an image" in cap.err
    assert f"error: {tmp_path / 'missing.png'}: no such file" in cap.err
    assert cap.err.strip().splitlines()[-1] == \
        "error: 1 of 3 image(s) classified; 2 could not be read (listed above)"
    assert "Traceback" not in cap.err


@pytest.mark.slow
def test_predict_on_the_simulated_board_gives_identical_answers(tiny_run, synthetic_data, capsys):
    from _fixtures import run_model

    from facemask_edge.device.sim import BoardSimulator

    model, card = run_model(tiny_run)
    folder = synthetic_data / "without_mask"
    with BoardSimulator(model, card, board="nano33ble", camera_every=0) as sim:
        assert main(["predict", str(tiny_run), str(folder), "--json", "--port", sim.path]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["images"]) == len([f for f in folder.iterdir() if not f.name.startswith(".")])
    for p in doc["images"]:
        b = p["board"]
        assert b["raw"] == p["raw"] and b["label"] == p["label"] and b["same_as_host"], p["path"]
        assert b["scores"] == p["scores"] and b["ms"] >= 0


# ---- quiet and reproducible: two real `pipeline --demo --seed N` runs ----------------------------

@pytest.fixture(scope="module")
def seeded_demo_runs(tmp_path_factory) -> list[tuple[Path, str]]:
    """``pipeline --demo --seed 11`` twice through the console entry point, each in a fresh
    folder: once plain, once with ``--verbose`` (which must change what is shown, not the model)."""
    base = tmp_path_factory.mktemp("seeded")
    env = {k: v for k, v in os.environ.items() if k != "FACEMASK_EDGE_TF_LOGS"}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    runs = []
    for name, flags in (("plain", []), ("verbose", ["--verbose"])):
        out = base / name
        res = subprocess.run([sys.executable, "-m", "facemask_edge", *flags, "pipeline", "--demo",
                              "--seed", "11", "--out", str(out), *FAST_DEMO],
                             capture_output=True, text=True, env=env, cwd=base, timeout=1200)
        assert res.returncode == 0, res.stderr[-3000:]
        runs.append((out, res.stdout + res.stderr))
    return runs


@pytest.mark.slow
def test_demo_prints_no_library_lines_without_verbose(seeded_demo_runs):
    (_, plain), (_, verbose) = seeded_demo_runs
    assert library_lines(plain) == []
    assert len(library_lines(verbose)) > 0  # the same count on --verbose output: the check can fail
    assert "up to 1 epoch\n" in plain and "1 epochs" not in plain


@pytest.mark.slow
def test_same_seed_gives_byte_identical_models(seeded_demo_runs):
    (a, _), (b, _) = seeded_demo_runs
    for name in ("model_int8.tflite", "model_int8_ptq.tflite", "model_int8_qat.tflite"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    card = json.loads((a / "model_card.json").read_text())
    assert card["reproducibility"] == {"seed": 11, "op_determinism": True}
    assert {"tensorflow", "tf_keras", "numpy", "python"} <= set(card["versions"])
    metrics = json.loads((a / "metrics.json").read_text())
    assert metrics["reproducibility"]["seed"] == 11 and metrics["reproducibility"]["versions"]


@pytest.mark.slow
def test_pipeline_says_which_variant_each_file_is_and_which_is_shipped(seeded_demo_runs):
    run, text = seeded_demo_runs[0]
    for kind in ("ptq", "qat"):
        size = (run / f"model_int8_{kind}.tflite").stat().st_size
        assert f"wrote model_int8_{kind}.tflite ({kind.upper()}): {size} bytes" in text
    shipped = json.loads((run / "model_card.json").read_text())["quantization"]
    size = (run / "model_int8.tflite").stat().st_size
    assert f"shipping model_int8_{shipped}.tflite as model_int8.tflite ({shipped.upper()}, {size} bytes)" in text
    assert "wrote " + str(run / "model_int8.tflite") not in text
    assert (run / "tensorboard" / "fine_tune").is_dir() and (run / "tensorboard" / "qat").is_dir()
