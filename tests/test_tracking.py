"""Energy (CodeCarbon, offline) and Weights & Biases (offline) logging, as in the study."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_energy_and_wandb_offline(tmp_path, synthetic_data, tiny_backbone, monkeypatch):
    pytest.importorskip("codecarbon")
    pytest.importorskip("wandb")
    from facemask_edge.train.trainer import TrainConfig, train

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    m = train(TrainConfig(data=str(synthetic_data), out=str(out), size=32,
                          weights=str(tiny_backbone), head_epochs=1, finetune_epochs=1,
                          energy=True, wandb=True))
    energy = m["energy"]
    assert energy["available"] and energy["mode"] == "offline"
    assert set(energy["stages"]) == {"feature_extractor", "fine_tune"}
    assert energy["energy_kwh"] > 0 and energy["emissions_kg_co2"] > 0
    assert json.loads((out / "metrics.json").read_text())["energy"] == energy
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
