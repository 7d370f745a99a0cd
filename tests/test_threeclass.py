"""Three classes (issue 18): several data roots, crops of one photo in one split, class weights,
per-class/per-source figures, the third label on the board, the non-commercial licence note."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facemask_edge.data.ingest import scan_dataset
from facemask_edge.data.sources import DEFAULT_GROUP_BY, licence_notes, source_of
from facemask_edge.data.splits import make_split, split_groups
from facemask_edge.errors import DataError
from facemask_edge.metrics import classification_metrics, headline, per_source_metrics
from facemask_edge.train.trainer import class_weights

from _fixtures import run_model

THREE = ("mask_weared_incorrect", "with_mask", "without_mask")
SHARED_3CLASS = Path(os.environ.get("FACEMASK_EDGE_3CLASS_DATA", Path(__file__).resolve().parents[1].parent
                                    / "shared" / "datasets" / "facemask-3class"))
CLI = [sys.executable, "-m", "facemask_edge"]


def _img(path: Path, seed: int, size: int = 20) -> None:
    rng = np.random.RandomState(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.randint(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """A two-class root (names without a source) and a three-class one laid out like
    facemask-3class: street photos with several faces of different classes (`amvd_<photo>_<face>`)
    and one-face portraits (`mfn_<photo>`)."""
    base = tmp_path_factory.mktemp("roots")
    two, three = base / "dev", base / "three"
    seed = 0
    for cls in ("with_mask", "without_mask"):
        for i in range(30):
            seed += 1
            _img(two / cls / f"{i:04d}.png", seed)
    # 40 street photos, each 3-5 faces spread over the classes (photo 7 of both roots exists
    # in name only in this one: the dev root has no amvd files).
    rng = np.random.RandomState(5)
    for photo in range(40):
        for face in range(int(rng.randint(3, 6))):
            seed += 1
            _img(three / THREE[(photo + face) % 3] / f"amvd_{photo}_{face}.jpg", seed)
    for n in range(30):
        seed += 1
        _img(three / ("mask_weared_incorrect" if n % 2 else "with_mask") / f"mfn_{n:05d}.jpg", seed)
    return two, three


def _photo_splits(split: dict) -> dict[str, set[str]]:
    where: dict[str, set[str]] = {}
    for part in ("train", "val", "test"):
        for p, _ in split[part]:
            m = re.match(r"^(amvd_\d+)_\d+\.", Path(p).name)
            if m:
                where.setdefault(m.group(1), set()).add(part)
    return where


def test_roots_merge_by_class_name_and_the_manifest_records_each_root(roots, tmp_path):
    two, three = roots
    ds = scan_dataset([str(two), str(three)], size=16, use_cache=False)
    assert ds.classes == list(THREE)
    counts = ds.counts()
    assert counts["without_mask"] == 30 + sum(1 for _ in (three / "without_mask").iterdir())
    assert {it.root for it in ds.items} == {str(two), str(three)}
    assert ds.images.shape[0] == len(ds.items)
    # paths stay unique and lead to the file from the common folder
    assert all((ds.root / it.path).is_file() for it in ds.items)
    ds.write_manifest(tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["roots"] == [str(two), str(three)]
    assert {u["root"] for u in m["used"]} == {str(two), str(three)}
    # the same root twice is one clear error
    with pytest.raises(DataError, match="twice"):
        scan_dataset([str(two), str(two)], size=None, use_cache=False)


def test_no_photo_straddles_train_val_test(roots):
    """Acceptance 2 on a synthetic fixture: every crop of a photo lands in one split, across classes."""
    ds = scan_dataset([str(roots[0]), str(roots[1])], size=None, use_cache=False)
    for seed in (1, 2, 3):
        s = make_split(ds, seed=seed)
        where = _photo_splits(s)
        assert len(where) == 40 and all(len(v) == 1 for v in where.values())
        assert s["groups_straddling"] == 0 and s["group_by"] == DEFAULT_GROUP_BY
        assert s["counts"]["test"] > 0 and s["counts"]["val"] > 0
    # Without grouping the same data does split photos: the check above can fail.
    s = make_split(ds, seed=1, group_by=None)
    assert any(len(v) > 1 for v in _photo_splits(s).values())


def test_group_key_includes_the_root(tmp_path):
    """Photo 3 of one root and photo 3 of another are different photos."""
    seed = iter(range(100))  # distinct pixels (a seed from hash() could repeat: one pixel group)
    for r in ("a", "b"):
        for c in ("with_mask", "without_mask"):
            for f in range(2):
                _img(tmp_path / r / c / f"amvd_3_{f}.jpg", next(seed))
    ds = scan_dataset([str(tmp_path / "a"), str(tmp_path / "b")], size=None, use_cache=False)
    groups = split_groups(ds)
    assert len(set(groups.values())) == 2


def test_group_by_bad_regex_is_a_data_error(roots):
    ds = scan_dataset(str(roots[1]), size=None, use_cache=False)
    with pytest.raises(DataError, match="regular expression"):
        make_split(ds, group_by="(")


@pytest.mark.skipif(not SHARED_3CLASS.is_dir(), reason="shared facemask-3class not present")
def test_shared_set_photos_do_not_straddle():
    """Acceptance 2 on the shared set (metadata only: no resizing)."""
    ds = scan_dataset(str(SHARED_3CLASS), size=None)
    s = make_split(ds, seed=1337)
    where = _photo_splits(s)
    assert len(where) > 500 and all(len(v) == 1 for v in where.values())
    groups = split_groups(ds)
    assert s["groups_straddling"] == 0 and len(set(groups.values())) < len(ds.items)


def test_exclude_noncommercial_leaves_out_mfn_files(roots, tmp_path):
    ds = scan_dataset(str(roots[1]), size=None, use_cache=False, exclude_noncommercial=True)
    assert ds.items and not any(Path(it.path).name.startswith("mfn_") for it in ds.items)
    assert len(ds.excluded) == 30 and "non-commercial" in ds.excluded[0]["reason"]
    ds.write_manifest(tmp_path)
    assert len(json.loads((tmp_path / "manifest.json").read_text())["excluded"]) == 30
    assert "excluded 30 non-commercial" in ds.summary_line()


def test_sources_and_licence_notes():
    assert source_of("three/with_mask/amvd_12_3.jpg") == "amvd"
    assert source_of("mfn_00042.jpg") == "mfn"
    assert source_of("with_mask/0_0_0 copy 10.jpg", "/d/facemask-dev") == "facemask-dev"
    assert source_of("with_mask/with_mask_0001.png", "/d/x") == "x"
    assert source_of("with_mask/Augmented_130_939150.png", "/d/facemask-dev") == "facemask-dev"
    assert licence_notes(["a/amvd_1_0.jpg", "0001.png"]) == []
    (note,) = licence_notes(["a/mfn_00001.jpg", "a/mfn_00002.jpg", "amvd_1_0.jpg"])
    assert "NON-COMMERCIAL" in note and "2 MaskedFace-Net" in note and "CC BY-NC-SA 4.0" in note


def test_balanced_class_weights():
    w = class_weights(np.array([0] * 10 + [1] * 30 + [2] * 60), 3, "balanced")
    assert w == pytest.approx({0: 100 / 30, 1: 100 / 90, 2: 100 / 180})
    # each class then weighs the same in the loss
    assert 10 * w[0] == pytest.approx(30 * w[1]) == pytest.approx(60 * w[2])
    assert class_weights(np.array([0, 1]), 2, "none") is None
    with pytest.raises(Exception, match="class_weight"):
        class_weights(np.array([0, 1]), 2, "sometimes")


def test_per_source_metrics_and_headline():
    classes = list(THREE)
    y = np.array([0, 0, 1, 1, 2, 0, 0, 1])
    p = np.array([0, 1, 1, 1, 2, 0, 0, 0])
    src = ["amvd"] * 5 + ["mfn"] * 3
    ps = per_source_metrics(y, p, classes, src)
    assert ps["amvd"]["per_class"]["mask_weared_incorrect"]["recall"] == 0.5
    assert ps["mfn"]["per_class"]["mask_weared_incorrect"]["recall"] == 1.0
    # mfn has no without_mask image: its macro-F1 averages the two classes it has
    assert ps["mfn"]["per_class"]["without_mask"]["support"] == 0
    f1s = [ps["mfn"]["per_class"][c]["f1"] for c in classes[:2]]
    assert ps["mfn"]["macro_f1"] == pytest.approx(np.mean(f1s))
    m = classification_metrics(y, p, classes)
    assert headline(m, classes) == ("macro-F1", m["f1"])
    assert headline(m, classes[:2])[0] == "accuracy"


def test_train_cli_takes_several_roots_and_the_new_options(roots, tiny_backbone, tmp_path):
    """One `train` over two roots: three classes, class weights and grouping in config.json,
    split.json with no straddling photo, licence note in the model card after convert."""
    from facemask_edge.convert.converter import convert_run

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(CLI + ["train", "--data", str(roots[0]), "--data", str(roots[1]), "--out", str(out),
                                 "--size", "32", "--weights", str(tiny_backbone), "--head-epochs", "1",
                                 "--finetune-epochs", "1", "--no-energy", "--class-weight", "balanced"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "class weights (balanced)" in proc.stderr + proc.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"] == [str(roots[0].resolve()), str(roots[1].resolve())]
    assert cfg["class_weight"] == "balanced" and cfg["group_by"] == DEFAULT_GROUP_BY
    assert cfg["classes"] == list(THREE)
    split = json.loads((out / "split.json").read_text())
    assert split["groups_straddling"] == 0 and all(len(v) == 1 for v in _photo_splits(split).values())
    convert_run(out, quantization="ptq", representative=20)
    card = json.loads((out / "model_card.json").read_text())
    assert card["noncommercial"] is True and "NON-COMMERCIAL" in card["licence_notes"][0]
    assert card["labels"] == list(THREE)
    from facemask_edge.export import export_run

    res = export_run(out, "nano33ble", out=tmp_path / "exp")
    assert "// LICENCE: NON-COMMERCIAL USE ONLY" in (res.path / "src" / "model_settings.h").read_text()


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    """A tiny converted three-class run (random fixed weights) over images of two sources."""
    from facemask_edge.device.testing import make_tiny_model, make_tiny_run, write_images

    base = tmp_path_factory.mktemp("run3")
    data = base / "street-set"
    write_images(data, per_class=12, classes=THREE)
    write_images(data, per_class=12, seed=1, classes=THREE, prefix="amvd_")
    return make_tiny_run(base / "run", data_dir=data, classes=THREE, model=make_tiny_model(classes=3))


def test_three_class_model_is_bit_exact_on_board_sim_with_per_source_report(run3, tmp_path):
    """Acceptance 3: the three-class int8 model on the simulated board (the firmware's C protocol
    code + tflite-micro), every test image compared with the host, per class and per source."""
    from facemask_edge.device.session import BoardSession
    from facemask_edge.device.sim import BoardSimulator
    from facemask_edge.device.transport import open_port
    from facemask_edge.validate.runner import validate
    from facemask_edge.validate.testset import load_validation_set

    vset = load_validation_set(run3)
    assert vset.classes == list(THREE) and len(set(vset.sources)) == 2
    model, card = run_model(run3)
    with BoardSimulator(model, card, camera_every=0) as sim:
        report = validate([BoardSession(open_port(sim.path, timeout=0.02), name="sim", timeout=5.0)],
                          vset, model, card, tmp_path / "val")
    assert report["complete"] and report["agreement"]["bit_exact"] == 1.0
    assert list(report["board"]["per_class"]) == list(THREE)
    assert set(report["per_source"]) == {"amvd", "street-set"}
    md = (tmp_path / "val" / "report.md").read_text()
    assert "## Per source (board)" in md and "recall mask_weared_incorrect" in md


def test_third_label_on_the_led_table_in_pred_lines_and_the_monitor_csv(run3, tmp_path):
    from facemask_edge.device.sim import BoardSimulator
    from facemask_edge.export import export_run
    from facemask_edge.export.generate import led_mask

    res = export_run(run3, "nano33ble", out=tmp_path / "exp")
    settings = (res.path / "src" / "model_settings.h").read_text()
    assert '"mask_weared_incorrect",' in settings
    assert "kFeLabelLed[FE_NUM_CLASSES] = {3, 2, 1};" in settings  # yellow, green, red
    assert led_mask("mask_weared_incorrect", 0) == 3 == led_mask("Mask worn incorrectly", 5)
    model, card = run_model(run3)
    # The tiny model answers class 0 (mask_weared_incorrect) to a black frame.
    frames = [np.zeros((120, 160, 3), np.uint8)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with BoardSimulator(model, card, camera_every=0.05, camera_frames=frames) as sim:
        proc = subprocess.run(CLI + ["monitor", "--port", sim.path, "--count", "4", "--csv",
                                     str(tmp_path / "p.csv"), "--duration", "20"],
                              capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = (tmp_path / "p.csv").read_text().splitlines()[1:]
    assert len(rows) == 4 and all(",0,mask_weared_incorrect," in r for r in rows)
    assert all(len(r.split(",")[-1].split()) == 3 for r in rows)  # three scores per PRED line


def _summary_for(run_dir: Path, train_files: list[str]) -> dict:
    """The pipeline's real summary writer on a run folder with this split and a three-class
    evaluation record."""
    from types import SimpleNamespace

    from facemask_edge.pipeline.config import PipelineConfig
    from facemask_edge.pipeline.state import _State
    from facemask_edge.pipeline.summary import _write_summary

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "split.json").write_text(json.dumps(
        {"train": [[p, "with_mask"] for p in train_files], "val": [], "test": []}))
    classes = list(THREE)
    m = classification_metrics([0, 0, 1, 2, 2], [0, 1, 1, 2, 2], classes)
    m["per_source"] = per_source_metrics([0, 0, 1, 2, 2], [0, 1, 1, 2, 2], classes,
                                         ["amvd", "mfn", "mfn", "amvd", "facemask-dev"])
    from facemask_edge.pipeline.run import _class_figures, _metric_figures

    fig = {**_metric_figures(m), **_class_figures(m)}
    statuses = {"evaluate": {"status": "done", "seconds": 1.0,
                             "figures": {"images": 5, "set": "test", "classes": classes, "float": fig,
                                         "int8": {"ptq": {"tflm": fig, "tflite_ref": fig}}}},
                "convert": {"status": "done", "seconds": 1.0, "figures": {"quantization": "ptq"}}}
    r = SimpleNamespace(cfg=PipelineConfig(out=str(run_dir)), run_dir=run_dir, statuses=statuses,
                        state=_State(run_dir), data_path=str(run_dir), data_info={})
    return _write_summary(r, 1.0, None)


def test_summary_carries_the_licence_note_and_the_macro_f1_headline(tmp_path):
    """Acceptance 4 (summary) and the three-class headline."""
    s = _summary_for(tmp_path / "nc", ["three/with_mask/amvd_1_0.jpg", "three/with_mask/mfn_00001.jpg"])
    assert s["licence_notes"] and "NON-COMMERCIAL" in s["licence_notes"][0]
    md = (tmp_path / "nc" / "summary.md").read_text()
    assert "**Licence: NON-COMMERCIAL USE ONLY" in md
    h = s["headline"]
    assert h["headline_metric"] == "macro-F1" and h["int8_host_test_macro_f1"] > 0
    assert set(k for k in h if "_test_recall_" in k) == {f"int8_host_test_recall_{c}" for c in THREE}
    assert "## Per class and per source (test split)" in md and "| mfn |" in md
    # Without mfn_ files: no note.
    s = _summary_for(tmp_path / "free", ["three/with_mask/amvd_1_0.jpg", "dev/with_mask/0001.png"])
    assert s["licence_notes"] == [] and "Licence" not in (tmp_path / "free" / "summary.md").read_text()


def test_several_roots_and_the_new_options_in_toml_and_on_the_command_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from facemask_edge.cli.pipeline import pipeline
    from facemask_edge.pipeline import build_config

    toml = tmp_path / "p.toml"
    toml.write_text('out = "r"\ndata = ["dev", "/abs/three"]\n'
                    '[train]\ngroup_by = ""\nclass_weight = "none"\nexclude_noncommercial = true\n')
    cfg = build_config({}, toml)
    assert cfg.data == [str(tmp_path / "dev"), "/abs/three"]
    tc = cfg.train_config(cfg.data)
    assert (tc.group_by, tc.class_weight, tc.exclude_noncommercial) == ("", "none", True)
    # --data twice on the command line: a missing root stops the pipeline before any work, named
    res = CliRunner().invoke(pipeline, ["--data", str(tmp_path / "a"), "--data", str(tmp_path / "b"),
                                        "--out", str(tmp_path / "o"), "--exclude-noncommercial"])
    assert res.exit_code != 0 and "does not exist" in str(res.exception or res.output)
    assert str(tmp_path / "a") in str(res.exception) and str(tmp_path / "b") in str(res.exception)
    assert not (tmp_path / "o").exists()
    # Both roots and the new options reach the pipeline's config.
    import facemask_edge.pipeline as pipeline_pkg

    seen = {}

    def fake_run(cfg, redo=None):
        seen["cfg"] = cfg
        raise SystemExit(3)

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setattr(pipeline_pkg, "run_pipeline", fake_run)
    res = CliRunner().invoke(pipeline, ["--data", str(tmp_path / "a"), "--data", str(tmp_path / "b"),
                                        "--out", str(tmp_path / "o"), "--weights", "none",
                                        "--exclude-noncommercial", "--class-weight", "none",
                                        "--group-by", ""])
    assert res.exit_code == 3, res.output
    cfg = seen["cfg"]
    assert cfg.data == [str(tmp_path / "a"), str(tmp_path / "b")]
    tc = cfg.train_config(cfg.data)
    assert (tc.exclude_noncommercial, tc.class_weight, tc.group_by) == (True, "none", "")


def test_view_report_of_a_run_with_several_roots(tmp_path):
    """`summary.json`'s data is a list for several roots: the view's run report still loads."""
    from facemask_edge.view.report import load_report

    run = tmp_path / "run"
    (run / "evaluation").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"data": [str(tmp_path / "a"), str(tmp_path / "b")]}))
    (run / "evaluation" / "evaluation.json").write_text(json.dumps(
        {"models": {"ptq": {"misclassified_tflm": [{"path": "a/with_mask/x.png", "true": "with_mask",
                                                    "predicted": "without_mask", "scores": [1, 2]}]}}}))
    rep = load_report(run)
    assert rep.summary["data"][0].endswith("a") and rep.thumbs == []


def test_pipeline_data_stage_with_several_roots_is_keyed_per_root(roots, tmp_path):
    """The data stage's key fingerprints each root of a list (it used ``Path(list)``: TypeError)
    and a second run finds the data up to date; touching one root makes it new again."""
    from facemask_edge.pipeline import build_config, run_pipeline

    cfg = build_config({"data": [str(r) for r in roots], "out": str(tmp_path / "o"), "until": "data",
                        "train": {"weights": "none"}})
    first = run_pipeline(cfg)
    assert first["stages"]["data"]["status"] == "done"
    assert run_pipeline(cfg)["stages"]["data"]["status"] == "up to date"
    _img(roots[1] / "with_mask" / "extra_photo.png", 999)
    try:
        assert run_pipeline(cfg)["stages"]["data"]["status"] == "done"
    finally:
        (roots[1] / "with_mask" / "extra_photo.png").unlink()
