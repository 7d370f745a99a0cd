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
