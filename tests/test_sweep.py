"""The sweep: its grid, the per-board choice, defaults.json, and a tiny sweep end to end."""

from __future__ import annotations

import json

import pytest

from facemask_edge.cli import main
from facemask_edge.errors import FacemaskError
from facemask_edge.sweep import build_grid, recommend, write_defaults


def test_full_grid_covers_sizes_colours_cuts_and_keras_widths(tiny_backbone):
    pts = build_grid(str(tiny_backbone), "none")
    desc = [p.describe() for p in pts]
    assert {d["size"] for d in desc} >= {64, 80, 96}
    assert {d["color"] for d in desc} == {"rgb", "grayscale"}
    cuts = {d["blocks"] for d in desc if d["weights"] == "tiny.h5"}
    assert cuts == {3, 5, 7, None}
    keras = {(d["arch"], d["alpha"]) for d in desc if d["weights"] == "none"}
    assert {a for a, _ in keras} == {"mobilenet_v1", "mobilenet_v2"} and len(keras) >= 3
    assert len({p.name for p in pts}) == len(pts)
    # The backbone file's architecture and width are read from it.
    assert all(d["arch"] == "mobilenet_v1" and d["alpha"] == 0.25 for d in desc if d["weights"] == "tiny.h5")


def test_fast_grid_is_small_but_varies_every_axis(tiny_backbone):
    pts = [p.describe() for p in build_grid(str(tiny_backbone), None, fast=True)]
    assert 4 <= len(pts) <= 8
    assert len({d["size"] for d in pts}) >= 2 and len({d["color"] for d in pts}) == 2
    assert len({d["blocks"] for d in pts}) >= 2


def test_grid_errors(tmp_path):
    with pytest.raises(FacemaskError, match="no configurations"):
        build_grid(None, "skip")
    with pytest.raises(FacemaskError, match="not found"):
        build_grid(str(tmp_path / "nope.h5"), None)


def row(name, acc, arena, macs, fits=True, lat=(50.0, 100.0), esp_fits=True):
    return {"name": name, "family": "f", "weights": "w.h5", "arch": "mobilenet_v1", "alpha": 0.25,
            "size": 64, "color": "rgb", "blocks": 5, "int8_val_accuracy": acc, "int8_test_accuracy": acc,
            "arena_bytes": arena, "flatbuffer_bytes": 1000, "macs": macs,
            "boards": {"nano33ble": {"fits": fits, "latency_ms": list(lat)},
                       "esp32cam": {"fits": esp_fits, "latency_ms": [lat[0] / 2, lat[0] / 2]}}}


def test_recommend_within_tolerance_takes_the_smallest_arena():
    rows = [row("big", 0.990, 90_000, 9), row("small", 0.987, 40_000, 5), row("tiny", 0.950, 10_000, 1)]
    rec = recommend(rows, tolerance=0.005)
    assert rec["nano33ble"]["name"] == "small"
    assert recommend(rows, tolerance=0.0)["nano33ble"]["name"] == "big"


def test_recommend_respects_fit_and_latency_budget():
    rows = [row("slow", 0.99, 40_000, 9, lat=(120.0, 240.0)), row("nofit", 0.99, 30_000, 5, fits=False),
            row("ok", 0.97, 50_000, 5)]
    rec = recommend(rows, {"nano33ble": 150.0, "esp32cam": 150.0})
    assert rec["nano33ble"]["name"] == "ok"
    assert rec["esp32cam"]["name"] == "nofit"  # fits the ESP32 and fast enough there
    none = recommend([row("slow", 0.99, 40_000, 9, lat=(300.0, 600.0))], {"nano33ble": 150.0})
    assert none["nano33ble"]["name"] is None and "none of the configurations fit" in none["nano33ble"]["why"]


def test_write_defaults_updates_the_model_and_keeps_the_rest(tmp_path):
    path = tmp_path / "defaults.json"
    path.write_text(json.dumps({"schema": 1, "boards": {"nano33ble": {
        "train": {"size": 96, "finetune_epochs": 25, "weights": "imagenet"}, "qat_epochs": 3}}}))
    rec = recommend([row("pick", 0.99, 40_000, 5)])
    write_defaults(rec, path, source="test")
    doc = json.loads(path.read_text())
    nano = doc["boards"]["nano33ble"]
    assert nano["train"]["size"] == 64 and nano["train"]["blocks"] == 5
    assert nano["train"]["finetune_epochs"] == 25 and nano["train"]["weights"] == "imagenet"
    assert nano["qat_epochs"] == 3 and nano["from_sweep"]["name"] == "pick"
    assert doc["boards"]["esp32cam"]["train"]["size"] == 64 and doc["source"] == "test"


def test_pipeline_reads_board_defaults(monkeypatch, tmp_path):
    from facemask_edge.pipeline import config as pipeline

    monkeypatch.setattr(pipeline, "board_defaults",
                        lambda b: {"train": {"size": 72, "blocks": 4}, "qat_epochs": 6} if b == "esp32cam" else {})
    cfg = pipeline.build_config({"out": str(tmp_path), "board": "esp32cam"})
    assert cfg.train["size"] == 72 and cfg.train["blocks"] == 4 and cfg.qat_epochs == 6


def test_dry_run_lists_configurations(tiny_backbone, capsys):
    assert main(["sweep", "--out", "unused", "--weights", str(tiny_backbone), "--fast", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tiny-b5-64-rgb" in out and "configurations" in out


@pytest.mark.slow
def test_tiny_sweep_end_to_end(synthetic_data, tiny_backbone, tmp_path, capsys):
    out = tmp_path / "sweep"
    ref = tmp_path / "reference.tflite"  # a stand-in reference: a small int8 model
    from facemask_edge.device.testing import make_tiny_model

    ref.write_bytes(make_tiny_model(size=32))
    args = ["sweep", "--data", str(synthetic_data), "--out", str(out), "--weights", str(tiny_backbone),
            "--sizes", "32", "--colors", "rgb,grayscale", "--blocks", "all", "--head-epochs", "1",
            "--finetune-epochs", "2", "--qat-epochs", "1", "--reference", str(ref)]
    assert main(args) == 0
    res = json.loads((out / "sweep.json").read_text())
    assert [r["name"] for r in res["rows"]] == ["tiny-full-32-rgb", "tiny-full-32-gray"]
    for r in res["rows"]:
        assert 0 <= r["int8_val_accuracy"] <= 1 and r["arena_bytes"] > 0 and r["macs"] > 0
        assert set(r["boards"]) == {"nano33ble", "esp32cam"}
        assert (out / "configs" / r["name"] / "model_int8.tflite").is_file()
        assert r["arena_vs_reference"] > 0 and r["flash_vs_reference"] > 0
    assert res["reference"]["arena_bytes"] > 0 and res["reference_limits"]["nano33ble"]["arena"] == 0.45
    # Grayscale input: fewer MACs in the first convolution.
    assert res["rows"][1]["macs"] < res["rows"][0]["macs"]
    for f in ("sweep.md", "pareto_arena.png", "pareto_latency.png", "recommendation.json"):
        assert (out / f).is_file(), f
    rec = json.loads((out / "recommendation.json").read_text())["boards"]
    assert rec["esp32cam"]["name"] in {"tiny-full-32-rgb", "tiny-full-32-gray"}
    # The stand-in reference is smaller than the swept models: the Nano's ratio limits rule them out.
    assert rec["nano33ble"]["name"] is None and "of the reference" in rec["nano33ble"]["why"]
    md = (out / "sweep.md").read_text()
    assert "## Recommendation" in md and "tiny-full-32-gray" in md
    # Again: every configuration is up to date, the table is the same.
    capsys.readouterr()
    assert main(args) == 0
    assert "train: up to date" in capsys.readouterr().err
    again = json.loads((out / "sweep.json").read_text())
    assert [r["int8_val_accuracy"] for r in again["rows"]] == [r["int8_val_accuracy"] for r in res["rows"]]


def test_recommend_with_reference_limits_and_latency_end():
    rows = [row("big", 0.99, 60_000, 9, lat=(100.0, 200.0)), row("mid", 0.98, 40_000, 5, lat=(100.0, 200.0)),
            row("small", 0.95, 30_000, 3, lat=(60.0, 120.0))]
    for r, (a, f) in zip(rows, ((0.6, 0.3), (0.4, 0.2), (0.3, 0.1))):
        r["arena_vs_reference"], r["flash_vs_reference"] = a, f
    limits = {"nano33ble": {"arena": 0.45, "flash": 0.25}}
    assert recommend(rows, {"nano33ble": 150.0}, 0.0, limits, "high")["nano33ble"]["name"] == "small"
    low = recommend(rows, {"nano33ble": 150.0}, 0.0, limits, "low")
    assert low["nano33ble"]["name"] == "mid" and "45%" in low["nano33ble"]["why"]
    assert low["esp32cam"]["name"] == "big"  # the limits are the Nano's
    with pytest.raises(FacemaskError, match="use high or low"):
        recommend(rows, latency_estimate="mid")


def test_grid_skips_axis_and_only(tiny_backbone):
    pts = build_grid(str(tiny_backbone), None, sizes=[48, 64], colors=["rgb"], blocks=[6],
                     skips=[(), (3,), (3, 5)])
    names = [p.name for p in pts]
    assert names == ["tiny-b6-48-rgb", "tiny-b6s3-48-rgb", "tiny-b6s35-48-rgb",
                     "tiny-b6-64-rgb", "tiny-b6s3-64-rgb", "tiny-b6s35-64-rgb"]
    assert pts[2].describe()["skip_blocks"] == [3, 5] and pts[0].describe()["skip_blocks"] is None
    only = build_grid(str(tiny_backbone), None, sizes=[48, 64], colors=["rgb"], blocks=[6],
                      skips=[(), (3,)], only=["tiny-b6s3-64-rgb"])
    assert [p.name for p in only] == ["tiny-b6s3-64-rgb"]
    both = build_grid(str(tiny_backbone), None, sizes=[48], colors=["rgb"], blocks=[6], heads=["avg", "spatial"])
    assert [(p.name, p.describe()["head"]) for p in both] == [("tiny-b6-48-rgb", "avg"),
                                                               ("tiny-b6-48-rgb-sp", "spatial")]
    with pytest.raises(FacemaskError, match="not in the grid: nope"):
        build_grid(str(tiny_backbone), None, only=["nope"])


def test_grid_augmentation_axis_sets_the_training_fields(tiny_backbone, capsys):
    pts = build_grid(str(tiny_backbone), None, sizes=[48], colors=["rgb"], blocks=[6],
                     augments=["none", "basic", "camera"])
    assert [(p.name, p.describe()["augment"]) for p in pts] == [
        ("tiny-b6-48-rgb-noaug", "none"), ("tiny-b6-48-rgb", "basic"), ("tiny-b6-48-rgb-cam", "camera")]
    assert [(p.train["augment"], p.train["camera_augment"]) for p in pts] == [(False, False), (True, False),
                                                                             (True, True)]
    # the fields are TrainConfig's: a point's train dict makes a valid config
    from facemask_edge.train.trainer import TrainConfig

    assert TrainConfig(**{k: v for k, v in pts[2].train.items()}).camera_augment is True
    assert main(["sweep", "--out", "unused", "--weights", str(tiny_backbone), "--dry-run",
                 "--augments", "basic,wild"]) != 0
    assert "unknown augmentation 'wild'" in capsys.readouterr().err


def test_per_board_latency_budget_option(tiny_backbone, capsys):
    assert main(["sweep", "--out", "unused", "--weights", str(tiny_backbone), "--fast", "--dry-run",
                 "--max-latency-ms", "nano33ble=100,esp32cam=400"]) == 0
    assert main(["sweep", "--out", "unused", "--weights", str(tiny_backbone), "--dry-run",
                 "--max-latency-ms", "nano=1"]) != 0
    assert "BOARD=MS" in capsys.readouterr().err


def test_sweep_teacher_distils_only_smaller_configurations(synthetic_data, tiny_backbone, tiny_trained_run,
                                                          tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--data", str(synthetic_data), "--out", str(out), "--weights", str(tiny_backbone),
            "--sizes", "24,32", "--colors", "rgb", "--blocks", "all", "--head-epochs", "1",
            "--finetune-epochs", "1", "--qat-epochs", "1", "--teacher", str(tiny_trained_run)]
    assert main(args) == 0
    teacher = {name: json.loads((out / "configs" / name / "config.json").read_text()).get("teacher")
               for name in ("tiny-full-24-rgb", "tiny-full-32-rgb")}
    assert teacher["tiny-full-24-rgb"] == str(tiny_trained_run.resolve())
    assert teacher["tiny-full-32-rgb"] is None  # the 32 px teacher is no larger than this student


def test_a_measured_camera_frame_replaces_the_estimate_in_the_budget():
    """With --measure the sweep's row carries the emulated Cortex-M4's time of a whole camera frame
    (preprocessing included); the budget is checked on it, and the table marks it."""
    from facemask_edge.sweep import SweepPoint, _row, sweep_markdown

    def summary(measured):
        nano = {"fits": True, "reason": "", "arena_with_margin_bytes": 30_000, "ram_left_bytes": 1,
                "flash_left_bytes": 1, "latency_ms": [64.0, 128.0]}
        if measured:
            nano["measured_frame_ms"] = [93.0, 139.5]
        esp = {**nano, "latency_ms": [45.0, 45.0]}
        esp.pop("measured_frame_ms", None)
        return {"stages": {"train": {"figures": {"val": {"accuracy": 0.9}, "test": {"accuracy": 0.9}}},
                           "convert": {"figures": {"val_accuracy_int8": 0.9, "quantization": "ptq", "params": 1,
                                                   "macs": 1, "flatbuffer_bytes": 1, "arena_bytes": 1}},
                           "profile": {"figures": {"boards": {"nano33ble": nano,
                                                              "esp32cam": esp}}}}}

    point = SweepPoint("p", {"size": 48, "color": "rgb", "blocks": 6}, "f")
    est, meas = _row(point, summary(False), 0.9, 1.0), _row(point, summary(True), 0.9, 1.0)
    assert est["boards"]["nano33ble"]["latency_ms"] == [64.0, 128.0]
    assert meas["boards"]["nano33ble"]["latency_ms"] == [93.0, 139.5]
    assert meas["boards"]["nano33ble"]["estimated_latency_ms"] == [64.0, 128.0]
    assert meas["boards"]["esp32cam"]["latency_source"] == "estimate"
    # 139.5 ms measured is over a 130 ms budget that the 128 ms estimate would have passed.
    assert recommend([est], {"nano33ble": 130.0})["nano33ble"]["name"] == "p"
    assert recommend([meas], {"nano33ble": 130.0})["nano33ble"]["name"] is None
    md = sweep_markdown({"data": "d", "epochs": {"head_epochs": 1, "finetune_epochs": 1, "qat_epochs": 0},
                         "rows": [meas], "recommendation": {}, "wall_seconds": 1.0})
    assert "| 93-140 m |" in md


def test_weights_is_an_axis_with_distinct_names(tiny_backbone, tmp_path, capsys):
    """--weights repeated: every backbone file gets the grid; files whose names start alike
    (mobilenet_v1_025_imagenet / _retinaface) keep distinct configuration names."""
    import shutil

    a = tmp_path / "mobilenet_v1_025_imagenet.h5"
    b = tmp_path / "mobilenet_v1_025_retinaface.h5"
    shutil.copy(tiny_backbone, a)
    shutil.copy(tiny_backbone, b)
    points = build_grid([str(tiny_backbone), str(a), str(b)], fast=True)
    names = [p.name for p in points]
    assert len(names) == len(set(names)) == 3 * len(build_grid(str(tiny_backbone), fast=True))
    assert {n.split("-")[0] for n in names} == {"tiny", "mobilenet_v1_025_imagenet", "mobilenet_v1_025_retinaface"}
    assert {p.train["weights"] for p in points} == {str(p.resolve()) for p in (tiny_backbone, a, b)}
    assert main(["sweep", "--out", "unused", "--weights", str(tiny_backbone), "--weights", str(b),
                 "--fast", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tiny-b5-64-rgb" in out and "mobilenet-b5-64-rgb" in out  # the first word is enough here
    assert main(["sweep", "--out", "unused", "--weights", "imagenet", "--weights", "none", "--dry-run"]) == 2
