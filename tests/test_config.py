"""Options: one description per option in the config dataclasses, checked before any work.

Issue 11 behaviours 7 (config errors surfaced late and raw) and 8 (two weights defaults, an
offline ImageNet download after 16 s), and the options of train/qat/convert/pipeline/sweep
derived from TrainConfig and PipelineConfig. None of these tests needs TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from facemask_edge.cli import cli, main
from facemask_edge.errors import FacemaskError
from facemask_edge.pipeline.config import PipelineConfig, board_defaults, build_config
from facemask_edge.boards import BOARDS
from facemask_edge.train.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DERIVED = ("train", "qat", "convert", "pipeline", "sweep")


# --- behaviour 7: every value is type-checked before any work, in one line -------------------

@pytest.mark.parametrize("text, expected", [
    ('qat_epochs = "three"', "qat_epochs = 'three' in {f}: expected an integer"),
    ("qat_lr = true", "qat_lr = True in {f}: expected a number"),
    ('compare_ptq = "yes"', "compare_ptq = 'yes' in {f}: expected true or false"),
    ('validate_limit = "all"', "validate_limit = 'all' in {f}: expected an integer or none"),
    ('sim = "qemu"', "sim = 'qemu' in {f}: expected one of subprocess, inprocess"),
    ('until = "deploy"', "until = 'deploy' in {f}: expected one of none, data, train"),
    ('export_format = "zip"', "export_format = 'zip' in {f}: expected one of sketch, arduino-library"),
    ("port = 1", "port = 1 in {f}: expected a string or none"),
    ("train = 3", "train = 3 in {f}: expected a table"),
    ('[train]\nhead = "max"', "[train] head = 'max' in {f}: expected one of avg, spatial"),
    ('[train]\ncolor = "blue"', "[train] color = 'blue' in {f}: expected one of rgb, grayscale"),
    ('[train]\narch = "resnet"', "[train] arch = 'resnet' in {f}: expected one of mobilenet_v1"),
    ('[train]\nblocks = "6"', "[train] blocks = '6' in {f}: expected an integer or none"),
    ("[train]\nskip_blocks = [3, \"5\"]", "[train] skip_blocks = [3, '5'] in {f}: expected a list of integers"),
    ("[train]\nteacher = [1, 2]", "[train] teacher = [1, 2] in {f}: expected a string or a list of strings"),
    ('[train]\ndistribute = "tpu"', "[train] distribute = 'tpu' in {f}: expected one of none, mirrored"),
    ("[train]\nweights = 7", "[train] weights = 7 in {f}: expected a string"),
    ("[train]\nenergy = 0", "[train] energy = 0 in {f}: expected true or false"),
])
def test_every_config_value_is_type_checked_naming_key_value_and_file(tmp_path, text, expected):
    toml = tmp_path / "p.toml"
    toml.write_text(text + "\n")
    with pytest.raises(FacemaskError) as err:
        build_config({"out": str(tmp_path / "r")}, toml)
    assert expected.format(f=toml) in str(err.value)
    assert "\n" not in str(err.value)


def test_ints_become_floats_and_lists_stay_lists(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text("qat_lr = 1\n[train]\nalpha = 1\nskip_blocks = [3]\n")
    cfg = build_config({"out": str(tmp_path / "r")}, toml)
    assert cfg.qat_lr == 1.0 and isinstance(cfg.qat_lr, float)
    assert cfg.train["alpha"] == 1.0 and isinstance(cfg.train["alpha"], float)
    assert cfg.train["skip_blocks"] == [3]


def test_a_bad_board_default_entry_is_named(monkeypatch, tmp_path):
    from facemask_edge.pipeline import config

    monkeypatch.setattr(config, "board_defaults", lambda b: {"train": {"size": "48"}})
    with pytest.raises(FacemaskError, match=r"\[train\] size = '48' in facemask_edge/defaults.json "
                                            r"\(board nano33ble\): expected an integer"):
        build_config({"out": str(tmp_path / "r")})


def test_missing_files_are_refused_by_the_command_before_any_work(tmp_path, capsys):
    toml = tmp_path / "p.toml"
    toml.write_text('[train]\nweights = "no/such.h5"\n')
    t0 = time.monotonic()
    assert main(["pipeline", "--config", str(toml), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: [train] weights = '{tmp_path}/no/such.h5' in {toml}: expected imagenet, none")
    assert "\n" not in err and time.monotonic() - t0 < 5
    assert not (tmp_path / "r").exists()  # nothing was started


def test_wrong_qat_epochs_fails_at_once_without_tensorflow_or_work(tmp_path):
    """The user's case: ``qat_epochs = "three"`` failed after 26 s with ``unexpected TypeError``."""
    toml = tmp_path / "run.toml"
    toml.write_text('qat_epochs = "three"\nuntil = "data"\n')  # (the demo's data stage: seconds)
    run = tmp_path / "run"
    code = ("import sys\nfrom facemask_edge.cli import main\nrc = main(sys.argv[1:])\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\nsys.exit(rc)")
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", code, "pipeline", "--demo", "--config",
                          str(toml), "--out", str(run)], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    seconds = time.monotonic() - t0
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip() == (f"error: qat_epochs = 'three' in {toml}: expected an integer "
                                  "(see `facemask-edge pipeline --help`, option --qat-epochs)")
    assert not run.exists(), "work started before the options were checked"
    assert seconds < 20, seconds  # an interpreter start and the CLI import, no stage


def test_the_toml_error_points_to_a_readme_section_that_exists(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text("this is = not toml\n")
    with pytest.raises(FacemaskError) as err:
        build_config({"out": str(tmp_path / "r")}, toml)
    section = re.search(r"README '([^']+)'", str(err.value)).group(1)
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"^#+ {re.escape(section)}\s*$", readme, re.M), f"README has no section {section!r}"
    # ... and that section describes the example file, whose every key is a real option.
    body = readme.split(section, 2)[-1]
    assert "benchmarks/pipeline.example.toml" in body
    example = ROOT / "benchmarks" / "pipeline.example.toml"
    import tomllib

    data = tomllib.loads(example.read_text())
    fields = {f.name for f in dataclasses.fields(PipelineConfig)}
    assert set(data) <= fields and set(data["train"]) <= {f.name for f in dataclasses.fields(TrainConfig)}


# --- behaviour 8: one weights default, shown, and offline an immediate one-line failure ------

def test_one_weights_default_in_every_command_and_board():
    assert TrainConfig().weights == "imagenet"
    for board in BOARDS:  # the pipeline's effective default on each board
        assert board_defaults(board).get("train", {}).get("weights", "imagenet") == "imagenet", board
    for name in ("train", "pipeline", "sweep"):
        assert "[default: imagenet]" in _help(name), name


def test_offline_imagenet_default_fails_at_once_in_one_line(tmp_path, monkeypatch, capsys):
    """The user's case: ``pipeline`` without ``--weights`` offline failed after 16 s."""
    from facemask_edge.testing import make_synthetic_dataset
    from facemask_edge.train import model

    data = make_synthetic_dataset(tmp_path / "faces", per_class=4, size=32)
    monkeypatch.setattr(model, "_keras_homes", lambda: [tmp_path / "keras"], raising=False)  # nothing cached
    monkeypatch.setattr(model, "_WEIGHTS_HOST", "weights.invalid", raising=False)  # RFC 6761: never resolves
    for argv in (["pipeline", "--data", str(data), "--out", str(tmp_path / "run")],
                 ["train", "--data", str(data), "--out", str(tmp_path / "trained")],
                 ["sweep", "--data", str(data), "--out", str(tmp_path / "sweep"), "--fast"]):
        t0 = time.monotonic()
        assert main(argv) == 1
        seconds = time.monotonic() - t0
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ImageNet weights for mobilenet_v1 are not in Keras' cache and "
                              "weights.invalid is not reachable"), err
        assert "--weights PATH" in err and "--weights none" in err and "\n" not in err
        assert seconds < 5, (argv[0], seconds)
    assert not any((tmp_path / d).exists() for d in ("run", "trained", "sweep"))


def test_cached_imagenet_weights_need_no_network(tmp_path, monkeypatch):
    from facemask_edge.train import model

    monkeypatch.setattr(model, "_keras_homes", lambda: [tmp_path])
    monkeypatch.setattr(model, "_WEIGHTS_HOST", "weights.invalid")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mobilenet_2_5_224_tf_no_top.h5").write_bytes(b"cached")
    model.check_weights_available("imagenet", "mobilenet_v1", 0.25, 96)  # 96 px loads the 224 file
    with pytest.raises(FacemaskError, match="not reachable"):
        model.check_weights_available("imagenet", "mobilenet_v2", 0.35, 96)
    with pytest.raises(FacemaskError, match="weights file .*nope.h5 does not exist"):
        model.check_weights_available(str(tmp_path / "nope.h5"))
    model.check_weights_available("none")


# --- options derived from the dataclasses: one default, shown, the same everywhere ----------

def _commands() -> dict[str, click.Command]:
    ctx = click.Context(cli)
    return {name: cli.get_command(ctx, name) for name in DERIVED}


def _help(name: str) -> str:
    cmd = _commands()[name]
    return cmd.get_help(click.Context(cmd, info_name=name, terminal_width=10_000, max_content_width=10_000))


def _shown(cmd: click.Command, param: click.Option) -> str | None:
    """The default as ``--help`` prints it, before any "; with --board ..." addition."""
    record = param.get_help_record(click.Context(cmd, terminal_width=10_000, max_content_width=10_000))
    m = re.search(r"\[default: ([^;\]]*)", record[1] if record else "")
    return m.group(1) if m else None


def test_config_options_are_derived_from_the_dataclasses():
    fields = {f.name for f in dataclasses.fields(TrainConfig)} | {f.name for f in dataclasses.fields(PipelineConfig)}
    for name, cmd in _commands().items():
        for p in cmd.params:
            # (the sweep's --blocks is an axis of its grid, a list of cuts: not the field)
            if isinstance(p, click.Option) and p.name in fields and (name, p.name) != ("sweep", "blocks"):
                assert getattr(p, "source", None), f"{name} {p.opts[0]} is not derived from its field"
    qat = {p.opts[0]: p for p in _commands()["qat"].params if isinstance(p, click.Option)}
    assert qat["--epochs"].source == "PipelineConfig.qat_epochs"
    assert qat["--lr"].source == "PipelineConfig.qat_lr"


def test_shared_options_have_one_default_shown_in_help():
    by_name: dict[str, dict] = {}
    by_field: dict[str, dict] = {}
    for name, cmd in _commands().items():
        text = " ".join(_help(name).split())
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.hidden:
                continue
            shown = _shown(cmd, p)
            if shown is not None:
                assert f"[default: {shown}" in text, (name, p.opts[0])
            source = getattr(p, "source", None)
            if source:
                f = {f.name: f for f in dataclasses.fields(TrainConfig if source.startswith("Train") else
                                                           PipelineConfig)}[source.split(".")[1]]
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                if default not in (None, "", [], {}):
                    assert shown is not None, f"{name} {p.opts[0]}: --help does not show the default"
                by_field.setdefault(source, {})[name] = shown
            by_name.setdefault(max(p.opts, key=len), {})[name] = shown
    # Same name, another meaning (not a config field): the sweep's --blocks is its grid's cut axis,
    # its --limit the first N configurations.
    for key in ("--blocks", "--limit"):
        by_name[key].pop("sweep")
    for group in (by_name, by_field):
        for key, shown in group.items():
            assert len(set(shown.values())) == 1, f"{key} has different defaults: {shown}"
    # the user's case: `qat --epochs` was 5, the pipeline's 3
    assert by_field["PipelineConfig.qat_epochs"] == {"qat": "3", "pipeline": "3", "sweep": "3"}
    assert by_field["TrainConfig.weights"] == {"train": "imagenet", "pipeline": "imagenet", "sweep": "imagenet"}


def test_pipeline_help_shows_where_a_board_changes_a_default():
    text = " ".join(_help("pipeline").split())
    nano = board_defaults("nano33ble")["train"]["size"]
    assert re.search(rf"--size INTEGER .*\[default: 96; with --board nano33ble: {nano}\b", text)


def test_defaults_reach_the_library_unchanged(tmp_path, monkeypatch):
    """What the commands pass when nothing is given equals the dataclass defaults."""
    seen = {}
    from facemask_edge.train import trainer

    def fake_train(cfg):
        seen["cfg"] = cfg
        raise FacemaskError("stop")

    monkeypatch.setattr(trainer, "train", fake_train)
    data = tmp_path / "d"
    data.mkdir()
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "o"), "--weights", "none"]) == 1
    got = dataclasses.asdict(seen["cfg"])
    want = dataclasses.asdict(TrainConfig(data=str(data), out=str(tmp_path / "o"), weights="none"))
    assert got == want
    assert json.dumps(got)  # config.json material
