"""The run folder as one object: provenance, stale artifacts, the shipped model, training resume.

Issue 11's user-visible behaviours 1, 2, 3, 5, 6 and 10: each test here failed on the code
before the Run object.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from facemask_edge.cli import main
from facemask_edge.errors import ModelError


def _interrupt_at(stage_call: int, epoch: int):
    """A Keras callback that raises KeyboardInterrupt (a Ctrl-C) when the ``stage_call``-th fit
    (1 = feature extractor, 2 = fine-tuning) is about to start epoch index ``epoch``."""
    from facemask_edge._tf import keras

    class Interrupt(keras().callbacks.Callback):
        calls = 0
        started: list = []

        def on_train_begin(self, logs=None):
            Interrupt.calls += 1

        def on_epoch_begin(self, e, logs=None):
            Interrupt.started.append((Interrupt.calls, e))
            if Interrupt.calls == stage_call and e == epoch:
                raise KeyboardInterrupt

    return Interrupt()


@pytest.mark.slow
def test_interrupted_training_resumes_after_the_last_completed_epoch(tmp_path, tiny_backbone, capsys):
    """Behaviour 6: Ctrl-C at fine-tune epoch 3 (two done); the re-run starts at epoch 3 with
    the optimizer's step count (the cosine schedule's position) restored, and the schedule
    ends where an uninterrupted one ends."""
    from facemask_edge.testing import make_synthetic_dataset
    from facemask_edge.train.trainer import TrainConfig, train

    data = make_synthetic_dataset(tmp_path / "faces", per_class=16, size=32)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), size=32, weights=str(tiny_backbone),
                      head_epochs=2, finetune_epochs=4, patience=10, energy=False, seed=3,
                      augment=False, batch_size=8)
    cb = _interrupt_at(2, 2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[cb])
    state = json.loads((tmp_path / "run" / "train_checkpoint" / "state.json").read_text())
    assert state["current"] == "fine_tune" and state["epoch"] == 2
    capsys.readouterr()

    seen = _interrupt_at(99, -1)
    m = train(cfg, callbacks=[seen])
    err = capsys.readouterr().err
    assert "resuming the interrupted training: fine_tune epoch 2" in err
    # Only fine-tuning epochs 3 and 4 ran; the feature extractor was not trained again.
    assert type(seen).started == [(1, 2), (1, 3)]
    assert m["resumed_from"] == {"stage": "fine_tune", "epoch": 2}
    assert m["epochs"] == {"feature_extractor": 2, "fine_tune": 4}
    assert len(m["history"]["loss"]) == 6
    steps_per_epoch = -(-m["train_images"] // 8)
    # The whole schedule, as without the interruption: 4 epochs of steps, not 2 (restarted
    # optimizer) and not 6.
    assert m["optimizer_steps"] == {"feature_extractor": 2 * steps_per_epoch, "fine_tune": 4 * steps_per_epoch}
    assert not (tmp_path / "run" / "train_checkpoint").exists()
    assert (tmp_path / "run" / "model.keras").is_file()

    # Other options: the checkpoint is not used, and the log says training starts over.
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_interrupt_at(2, 1)])
    capsys.readouterr()
    cfg.finetune_lr = 1e-4
    train(cfg)
    assert "is from other options or data: training starts over" in capsys.readouterr().err


# ---- a trained tiny run with a QAT model: convert, evaluate, train again -------------------------

def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _card(run: Path) -> dict:
    return json.loads((run / "model_card.json").read_text())


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory, tiny_trained_run) -> Path:
    """A copy of the tiny trained run with a one-epoch QAT model (no int8 model yet)."""
    from facemask_edge.train.qat import qat

    run = tmp_path_factory.mktemp("qat") / "run"
    shutil.copytree(tiny_trained_run, run, ignore=shutil.ignore_patterns("model_int8*", "model_card*",
                                                                         "provenance.json", "evaluation"))
    qat(run, epochs=1)
    return run


@pytest.mark.slow
def test_convert_ships_the_pipelines_choice_and_says_why(qat_run, tmp_path, capsys):
    """Behaviour 2: the default is the pipeline's rule (the variant most faithful to the float
    model on validation), and the command says what it shipped and why; --qat/--ptq still choose."""
    run = tmp_path / "r"
    shutil.copytree(qat_run, run)
    assert main(["convert", str(run), "--representative", "40"]) == 0
    out = capsys.readouterr().out
    sel = _card(run)["selection"]
    assert sel["rule"] == "best" and set(sel["validation"]) == {"ptq", "qat"}
    v = sel["validation"]
    rule = max(v, key=lambda k: (v[k]["label_agreement_with_float"], -v[k]["mean_score_diff"], k == "ptq"))
    assert sel["selected"] == rule == _card(run)["quantization"]
    shipped_line = next(ln for ln in out.splitlines() if ln.strip().startswith("shipped "))
    assert f"{rule.upper()} (fidelity to the float model on the validation split" in shipped_line
    assert "ptq on validation" in out and "qat on validation" in out and "accuracy" in out
    assert _sha(run / "model_int8.tflite") == _sha(run / f"model_int8_{rule}.tflite")
    for kind in ("qat", "ptq"):
        assert main(["convert", str(run), f"--{kind}", "--representative", "40"]) == 0
        assert _card(run)["quantization"] == kind and _card(run)["selection"]["selected"] == kind
        assert _sha(run / "model_int8.tflite") == _sha(run / f"model_int8_{kind}.tflite")
        assert f"{kind.upper()} (asked for ({kind}))" in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_reports_on_the_shipped_model_and_refuses_a_bad_one(qat_run, tmp_path, capsys):
    """Behaviour 3 (and 10): evaluate's figures are the shipped file's, the other variant is
    labelled a variant; a corrupt or replaced model_int8.tflite is one error line, exit 1, and
    no evaluation folder is made."""
    from facemask_edge.convert.evaluate import evaluate_run

    run = tmp_path / "r"
    shutil.copytree(qat_run, run)
    assert main(["convert", str(run), "--qat", "--representative", "40"]) == 0
    assert main(["convert", str(run), "--ptq", "--representative", "40"]) == 0
    rep = evaluate_run(run)
    assert rep["shipped"]["model"] == "model_int8.tflite" and rep["shipped"]["quantization"] == "ptq"
    assert rep["shipped"]["sha256"] == _sha(run / "model_int8.tflite")
    assert rep["variants"]["ptq"] == {"model": "model_int8_ptq.tflite", "sha256": rep["shipped"]["sha256"],
                                      "shipped": True}
    assert rep["variants"]["qat"]["shipped"] is False and 0 <= rep["variants"]["qat"]["tflm"]["accuracy"] <= 1
    md = (run / "evaluation" / "evaluation.md").read_text()
    assert md.count("| shipped (ptq) int8 |") == 3 and md.count("| variant qat int8 |") == 3
    capsys.readouterr()

    bad = tmp_path / "bad"
    shutil.copytree(run, bad, ignore=shutil.ignore_patterns("evaluation"))
    data = bytearray((bad / "model_int8.tflite").read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    (bad / "model_int8.tflite").write_bytes(bytes(data))
    assert main(["evaluate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: model_card.json describes another model_int8.tflite") and err.count("\n") == 1
    assert not (bad / "evaluation").exists()
    # A consistent pair put there by hand (the QAT variant and its card): not what convert shipped.
    shutil.copy(bad / "model_int8_qat.tflite", bad / "model_int8.tflite")
    card = json.loads((bad / "model_card_qat.json").read_text())
    (bad / "model_card.json").write_text(json.dumps({**card, "model": "model_int8.tflite"}))
    assert main(["evaluate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "model_int8.tflite is not the file that was made for this run" in err and err.count("\n") == 1
    assert not (bad / "evaluation").exists()
    # Behaviour 10: a failed command leaves no folder behind.
    assert main(["evaluate", str(tmp_path / "missing")]) == 1
    assert not (tmp_path / "missing").exists()


@pytest.mark.slow
def test_training_into_an_existing_run_leaves_nothing_stale(qat_run, tmp_path, tiny_backbone, capsys):
    """Behaviour 1: train --out R into a converted run with a QAT model, then convert: only what
    the new training made is used, and every figure of the card describes the shipped file."""
    from facemask_edge.artifacts.tflite import read_tflite
    from facemask_edge.testing import make_synthetic_dataset
    from facemask_edge.train.trainer import TrainConfig, train

    run = tmp_path / "r"
    shutil.copytree(qat_run, run)
    assert main(["convert", str(run), "--qat", "--representative", "40"]) == 0
    old = {n: (run / n).read_bytes() for n in ("model_qat.h5", "model_int8.tflite", "model_card.json")}
    capsys.readouterr()

    data = make_synthetic_dataset(tmp_path / "new-faces", per_class=16, size=32, seed=9)
    m = train(TrainConfig(data=str(data), out=str(run), size=32, weights=str(tiny_backbone), head_epochs=1,
                          finetune_epochs=1, energy=False, seed=8, augment=False, alpha=0.5))
    err = capsys.readouterr().err
    assert f"{run} already held a trained run: removed what was made from its model (model_qat.h5" in err
    for gone in ("model_qat.h5", "model_int8.tflite", "model_int8_qat.tflite", "model_card.json"):
        assert not (run / gone).exists(), gone

    assert main(["convert", str(run), "--representative", "40"]) == 0
    card = _card(run)
    shipped = (run / "model_int8.tflite").read_bytes()
    assert card["quantization"] == "ptq" and set(card["selection"]["validation"]) == {"ptq"}
    assert shipped != old["model_int8.tflite"]
    info = read_tflite(shipped)
    assert card["sha256"] == _sha(run / "model_int8.tflite") and card["flatbuffer_bytes"] == len(shipped)
    assert card["macs"] == info.macs and card["params"] == m["params"]
    prov = json.loads((run / "provenance.json").read_text())["artifacts"]
    assert prov["model_int8.tflite"]["inputs"]["model.keras"] == _sha(run / "model.keras")

    # The old QAT model copied back: convert refuses it, in one line, whatever is asked.
    (run / "model_qat.h5").write_bytes(old["model_qat.h5"])
    capsys.readouterr()
    for args in ([], ["--qat"]):
        assert main(["convert", str(run), *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: model_qat.h5 is not recorded in provenance.json") and err.count("\n") == 1
    # The old shipped model and its card copied back: no stage uses them.
    for n in ("model_int8.tflite", "model_card.json"):
        (run / n).write_bytes(old[n])
    for cmd in (["evaluate", str(run)], ["profile", str(run)], ["export", str(run), "--board", "nano33ble",
                                                                "--format", "arduino-library"]):
        assert main(cmd) == 1, cmd
        err = capsys.readouterr().err
        assert "model_int8.tflite is not the file that was made for this run" in err and err.count("\n") == 1


# ---- provenance on plain files (fast) -------------------------------------------------------------

def test_provenance_follows_the_chain(tmp_path):
    from facemask_edge.artifacts.run import Run

    run = Run(tmp_path)
    for name, text in (("model.keras", "float"), ("split.json", "{}"), ("model_qat.h5", "qat"),
                       ("model_int8_qat.tflite", "int8")):
        (tmp_path / name).write_text(text)
    run.record("model_qat.h5", ["model.keras", "split.json"])
    run.record("model_int8_qat.tflite", ["model_qat.h5", "split.json"])
    assert run.stale("model_int8_qat.tflite") is None
    (tmp_path / "model.keras").write_text("retrained")
    assert run.stale("model_qat.h5") == "model_qat.h5 was made from an earlier model.keras (it changed since)"
    why = run.stale("model_int8_qat.tflite")
    assert why == ("model_int8_qat.tflite was made from a stale model_qat.h5: model_qat.h5 was made from "
                   "an earlier model.keras (it changed since)")
    with pytest.raises(ModelError, match="facemask-edge qat"):
        run.check_fresh("model_qat.h5")
    # A gone input contradicts nothing; an unrecorded model in a run with provenance is refused.
    (tmp_path / "model.keras").unlink()
    assert run.stale("model_int8_qat.tflite") is None
    (tmp_path / "model_int8_ptq.tflite").write_text("from elsewhere")
    assert "not recorded in provenance.json" in run.stale("model_int8_ptq.tflite")
    # A folder without provenance (a copied model and its card) is taken as it is.
    assert Run(tmp_path / "nothing").stale("model_int8.tflite") is None


# ---- behaviour 10: failed commands leave no folders ------------------------------------------------

@pytest.mark.parametrize("cmd", [["evaluate"], ["validate", "--port", "loop://"], ["profile"],
                                 ["export", "--board", "nano33ble", "--format", "arduino-library"],
                                 ["convert"], ["qat"]])
def test_a_command_on_a_missing_run_creates_nothing(tmp_path, capsys, cmd):
    missing = tmp_path / "missing"
    assert main([cmd[0], str(missing), *cmd[1:]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not missing.exists()


@pytest.mark.slow
def test_training_on_missing_data_creates_no_run_folder(tmp_path):
    from facemask_edge.errors import DataError
    from facemask_edge.train.trainer import TrainConfig, train

    with pytest.raises(DataError):
        train(TrainConfig(data=str(tmp_path / "no-data"), out=str(tmp_path / "run"), energy=False))
    assert not (tmp_path / "run").exists()
