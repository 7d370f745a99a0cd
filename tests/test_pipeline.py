"""The one-command pipeline: options and TOML, up-to-date stages, interruption, resume, --demo."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from _emulator import needs_emulator, tflm_tree
from facemask_edge.cli import main
from facemask_edge.errors import FacemaskError
from facemask_edge.pipeline import STAGES, board_defaults, build_config, run_pipeline

# The demo with shorter training, so the suite stays fast; everything else is the real --demo.
FAST_DEMO = ["--head-epochs", "1", "--finetune-epochs", "3", "--qat-epochs", "1"]


def state(run: Path) -> dict:
    return json.loads((run / "pipeline_state.json").read_text())["stages"]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


# ---- options ------------------------------------------------------------------------------------

def test_layers_board_defaults_then_toml_then_cli(tmp_path):
    toml = tmp_path / "conf" / "p.toml"
    toml.parent.mkdir()
    toml.write_text('board = "esp32cam"\ndata = "faces"\nqat_epochs = 4\nreference = "../ref.tflite"\n'
                    '[train]\nsize = 80\nfinetune_epochs = 7\nweights = "w/backbone.h5"\nhead_lr = 1\n')
    cfg = build_config({"out": str(tmp_path / "run"), "qat_epochs": 2,
                        "train": {"finetune_epochs": 9, "size": None}}, toml)
    base = board_defaults("esp32cam")
    assert cfg.board == "esp32cam"
    assert cfg.qat_epochs == 2  # command line beats the file
    assert cfg.train["finetune_epochs"] == 9 and cfg.train["size"] == 80  # None = not given
    assert cfg.train["arch"] == base["train"]["arch"]  # untouched board default
    assert cfg.train["head_lr"] == 1.0 and isinstance(cfg.train["head_lr"], float)
    # Relative paths in the file are relative to the file.
    assert cfg.data == str(toml.parent / "faces")
    assert cfg.reference == str(toml.parent / "../ref.tflite")
    assert cfg.train["weights"] == str(toml.parent / "w/backbone.h5")


def test_teachers_and_skipped_blocks_in_toml(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text('out = "r"\n[train]\nteacher = ["t96a", "/abs/t96b"]\nskip_blocks = [3, 5]\n')
    cfg = build_config({}, toml)
    assert cfg.train["teacher"] == [str(tmp_path / "t96a"), "/abs/t96b"]
    assert cfg.train["skip_blocks"] == [3, 5]
    toml.write_text('out = "r"\n[train]\nteacher = "t96"\n')
    assert build_config({}, toml).train["teacher"] == str(tmp_path / "t96")


def test_package_defaults_cover_every_board():
    from facemask_edge.boards import BOARDS

    for b in BOARDS:
        d = board_defaults(b)
        assert {"arch", "size", "color"} <= set(d["train"]), b
        # The packaged entry (with the sweep's record of where it came from) builds a config.
        cfg = build_config({"out": "r", "board": b})
        assert cfg.board == b and cfg.train["size"] == d["train"]["size"]


def test_urls_and_keywords_in_toml_are_not_paths(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text('out = "r"\ndata = "https://example.org/x.zip"\n[train]\nweights = "imagenet"\n')
    cfg = build_config({}, toml)
    assert cfg.data == "https://example.org/x.zip" and cfg.train["weights"] == "imagenet"
    assert cfg.out == str(tmp_path / "r")


@pytest.mark.parametrize("text, match", [
    ("epochs = 3\n", "unknown option 'epochs'"),
    ("size = 64\n", "did you mean \\[train\\] size"),
    ("[train]\nsizes = 64\n", "unknown training option 'sizes'"),
    ("[train]\nsize = \"big\"\n", "\\[train\\] size = 'big' in .*p.toml: expected an integer"),
    ("[train]\naugment = 1\n", "\\[train\\] augment = 1 in .*p.toml: expected true or false"),
    ("board = \"uno\"\n", "board = 'uno' in .*p.toml: expected one of nano33ble, esp32cam"),
    ("quantization = \"fp16\"\n", "quantization = 'fp16' in .*: expected one of best, qat, ptq"),
    ("this is = not toml\n", "not valid TOML"),
])
def test_bad_config_files(tmp_path, text, match):
    toml = tmp_path / "p.toml"
    toml.write_text(text)
    with pytest.raises(FacemaskError, match=match):
        build_config({"out": str(tmp_path / "r")}, toml)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["pipeline", "--config", str(tmp_path / "missing.toml"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config file") and "\n" not in err
    assert main(["pipeline", "--data", str(tmp_path)]) == 1
    assert "pass --out RUN_DIR" in capsys.readouterr().err


def test_demo_has_a_default_out_and_its_own_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = build_config({"demo": True, "data": "/elsewhere"})
    assert cfg.out == "facemask-edge-demo"
    assert cfg.data == str(tmp_path / "facemask-edge-demo" / "demo-data")
    assert cfg.train["weights"].endswith("demo-backbone.h5")


def test_default_data_is_downloaded(tmp_path, monkeypatch):
    """No --data: the data stage fetches the archive ($FACEMASK_EDGE_DATA_URL here: loopback)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _http_server import Server, make_repo_zip

    monkeypatch.setenv("FACEMASK_EDGE_CACHE", str(tmp_path / "cache"))
    srv = Server(make_repo_zip())
    monkeypatch.setenv("FACEMASK_EDGE_DATA_URL", srv.url + "/data.zip")
    try:
        cfg = build_config({"out": str(tmp_path / "run"), "until": "data"})
        s = run_pipeline(cfg)
    finally:
        srv.close()
    assert s["data_info"]["source"] == "download"
    assert Path(s["data"]).name == "dataset" and (Path(s["data"]) / "with_mask").is_dir()
    assert s["stages"]["data"]["status"] == "done"
    assert all(s["stages"][k]["status"].startswith("not asked") for k in STAGES[1:])
    assert "downloaded from" in (tmp_path / "run" / "summary.md").read_text()


def test_offline_without_data_says_pass_data(tmp_path, monkeypatch, capsys):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    monkeypatch.setenv("FACEMASK_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FACEMASK_EDGE_DATA_URL", f"http://127.0.0.1:{port}/data.zip")
    # (--weights none: offline, the default ImageNet weights would be refused first)
    assert main(["pipeline", "--out", str(tmp_path / "run"), "--weights", "none"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # progress lines come before
    assert err.startswith("error: cannot download") and "offline? pass --data" in err
    s = summary(tmp_path / "run")  # the summary says where it stopped
    assert not s["complete"] and s["stages"]["data"]["status"].startswith("failed")


# ---- the whole chain (demo data, tiny backbone, simulated board) ------------------------------

@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("pipeline") / "demo"
    assert main(["pipeline", "--demo", "--out", str(run), *FAST_DEMO]) == 0
    return run


@pytest.mark.slow
def test_demo_runs_every_stage(demo_run):
    s = summary(demo_run)
    assert s["complete"] and s["demo"]
    assert [k for k, v in s["stages"].items() if v["status"] == "done"] == list(STAGES)
    for name in STAGES[1:]:
        assert s["stages"][name]["seconds"] is not None
    h = s["headline"]
    assert h["device_host_bit_exact"] == 1.0
    assert h["int8_device_test_accuracy"] == h["int8_host_test_accuracy"]
    assert h["fits_nano33ble"] is True and h["arena_bytes"] > 0
    for f in ("summary.md", "summary_stages.png", "summary_accuracy.png", "summary_budget.png",
              "model_int8.tflite", "model_int8_ptq.tflite", "model_int8_qat.tflite",
              "export/nano33ble/src/model_data.cc", "export/nano33ble/nano33ble.ino",
              "validate-sim/report.json", "evaluation/evaluation.json"):
        assert (demo_run / f).is_file(), f
    md = (demo_run / "summary.md").read_text()
    assert "Demo run" in md and "| validate | done |" in md
    conv = s["stages"]["convert"]["figures"]
    assert set(conv["variants"]) == {"ptq", "qat"} and conv["quantization"] in ("ptq", "qat")
    assert json.loads((demo_run / "model_card.json").read_text())["quantization"] == conv["quantization"]


@pytest.mark.slow
def test_rerun_redoes_nothing(demo_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in demo_run.rglob("*") if p.is_file()
              and p.name not in ("summary.json", "summary.md") and not p.name.startswith("summary_")}
    first = summary(demo_run)
    t = time.monotonic()
    assert main(["pipeline", "--demo", "--out", str(demo_run), *FAST_DEMO]) == 0
    assert time.monotonic() - t < 20
    s = summary(demo_run)
    assert all(s["stages"][k]["status"] == "up to date" for k in STAGES)
    assert "[2/8] train: up to date" in capsys.readouterr().err
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after  # not one file rewritten
    # The recorded stage times stay: a no-op re-run does not report the data stage as 0.0 s.
    assert {k: v["seconds"] for k, v in s["stages"].items()} == \
        {k: v["seconds"] for k, v in first["stages"].items()}
    assert s["stages"]["data"]["seconds"] > 0 and s["pipeline_seconds"] == first["pipeline_seconds"]


@pytest.mark.slow
def test_stages_one_by_one_ship_what_the_pipeline_ships(demo_run, tmp_path, capsys):
    """Acceptance 5 of issue 11: from the pipeline's trained models (training on CPU threads is
    not bit-reproducible), convert, profile, evaluate and export run as separate commands give
    the pipeline's shipped model, card and firmware bytes; convert's default is the pipeline's
    rule, so it does not replace the pipeline's choice."""
    run = tmp_path / "by-hand"
    run.mkdir()
    for name in ("config.json", "labels.txt", "split.json", "manifest.json", "model.keras", "model_qat.h5",
                 "qat.json", "provenance.json"):
        (run / name).write_bytes((demo_run / name).read_bytes())
    s = summary(demo_run)
    rep = str(s["options"]["representative"])
    assert main(["convert", str(run), "--representative", rep]) == 0
    for name in ("model_int8.tflite", "model_int8_ptq.tflite", "model_int8_qat.tflite"):
        assert (run / name).read_bytes() == (demo_run / name).read_bytes(), name
    card, pcard = (json.loads((d / "model_card.json").read_text()) for d in (run, demo_run))
    for key in ("sha256", "quantization", "selection", "flatbuffer_bytes", "arena_bytes", "macs", "params", "ops"):
        assert card[key] == pcard[key], key
    assert main(["profile", str(run)]) == 0
    assert main(["evaluate", str(run)]) == 0
    assert main(["export", str(run), "--board", s["board"], "--out", str(run / "export")]) == 0
    ev, pev = (json.loads((d / "evaluation" / "evaluation.json").read_text()) for d in (run, demo_run))
    assert ev["shipped"]["tflm"]["accuracy"] == pev["shipped"]["tflm"]["accuracy"]
    for f in (demo_run / "export" / s["board"] / "src").iterdir():
        if f.name != "model_settings.h":  # it names the run folder
            assert (run / "export" / s["board"] / "src" / f.name).read_bytes() == f.read_bytes(), f.name


@pytest.mark.slow
def test_changed_option_redoes_only_what_depends_on_it(demo_run):
    assert main(["pipeline", "--demo", "--out", str(demo_run), *FAST_DEMO, "--limit", "7"]) == 0
    st = summary(demo_run)["stages"]
    assert [k for k in STAGES[1:] if st[k]["status"] == "done"] == ["validate"]
    assert st["validate"]["figures"]["images"] == 7
    # A damaged output is noticed and remade.
    (demo_run / "export/nano33ble/src/model_data.cc").write_text("// edited\n")
    assert main(["pipeline", "--demo", "--out", str(demo_run), *FAST_DEMO, "--limit", "7"]) == 0
    st = summary(demo_run)["stages"]
    assert [k for k in STAGES[1:] if st[k]["status"] == "done"] == ["export"]
    assert "g_facemask_model_data" in (demo_run / "export/nano33ble/src/model_data.cc").read_text()


def demo_cfg(run: Path, **options):
    """The options FAST_DEMO gives on the command line, for calling the library directly."""
    return build_config({"demo": True, "out": str(run), "train": {"head_epochs": 1, "finetune_epochs": 3},
                         "qat_epochs": 1, **options})


@pytest.mark.slow
def test_interrupted_pipeline_continues(demo_run, monkeypatch):
    from facemask_edge.pipeline import run as pl

    calls = []

    def interrupted(self, resume):
        calls.append(resume)
        raise KeyboardInterrupt

    monkeypatch.setattr(pl._Runner, "stage_evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(demo_cfg(demo_run), redo="evaluate")
    s = summary(demo_run)
    assert not s["complete"] and s["stages"]["evaluate"]["status"] == "interrupted"
    assert s["stages"]["export"]["status"] == "not run"
    assert state(demo_run)["evaluate"]["status"] == "running"
    monkeypatch.undo()
    run_pipeline(demo_cfg(demo_run))
    st = summary(demo_run)["stages"]
    assert [k for k in STAGES[1:] if st[k]["status"] == "done"] == ["evaluate", "export", "validate"]
    assert all(st[k]["status"] == "up to date" for k in ("train", "qat", "convert", "profile"))
    assert calls == [False]


@pytest.mark.slow
def test_interrupted_validation_resumes_image_by_image(demo_run, capsys):
    """A kill mid-validation: the stage is still 'running' with the same key, and results.jsonl
    holds the images done so far; the next run streams only the rest."""
    from facemask_edge.validate.runner import read_results

    assert main(["pipeline", "--demo", "--out", str(demo_run), *FAST_DEMO, "--sim", "subprocess",
                 "--redo", "validate"]) == 0
    results = demo_run / "validate-sim" / "results.jsonl"
    _, records, _ = read_results(results)
    n = len(records)
    lines = results.read_text().splitlines(keepends=True)
    keep = [ln for ln in lines if '"kind":"header"' in ln] + [ln for ln in lines if '"kind":"image"' in ln][:5]
    results.write_text("".join(keep))
    raw = json.loads((demo_run / "pipeline_state.json").read_text())
    raw["stages"]["validate"]["status"] = "running"
    (demo_run / "pipeline_state.json").write_text(json.dumps(raw))
    capsys.readouterr()
    assert main(["pipeline", "--demo", "--out", str(demo_run), *FAST_DEMO, "--sim", "subprocess"]) == 0
    err = capsys.readouterr().err
    assert "validate: on-device validation" in err and "(resuming)" in err
    _, records, segments = read_results(results)
    assert len(records) == n and segments[-1]["images"] == n - 5
    assert summary(demo_run)["stages"]["validate"]["figures"]["bit_exact"] == 1.0


@pytest.mark.slow
def test_budget_failure_stops_before_export(demo_run, tmp_path, monkeypatch):
    """A model that does not fit: export refuses, the summary says so, stages before stay done."""
    import dataclasses

    from facemask_edge import boards

    small = dataclasses.replace(boards.BOARDS["nano33ble"], ram_bytes=70 * 1024)
    monkeypatch.setitem(boards.BOARDS, "nano33ble", small)
    with pytest.raises(FacemaskError, match="does not fit"):
        run_pipeline(demo_cfg(demo_run), redo="profile")
    s = summary(demo_run)
    assert s["stages"]["export"]["status"].startswith("failed: ")
    assert s["stages"]["profile"]["figures"]["boards"]["nano33ble"]["fits"] is False
    assert "NO" in (demo_run / "summary.md").read_text()


def test_redo_rejects_unknown_stage(tmp_path):
    with pytest.raises(FacemaskError, match="unknown stage"):
        run_pipeline(build_config({"out": str(tmp_path / "r"), "data": str(tmp_path)}), redo="deploy")


def test_cli_help_lists_pass_through_training_options():
    from click.testing import CliRunner

    from facemask_edge.cli import cli

    out = CliRunner().invoke(cli, ["pipeline", "--help"]).output
    for opt in ("--data", "--out", "--board", "--config", "--port", "--demo", "--weights", "--size",
                "--blocks", "--finetune-epochs", "--qat-epochs", "--reference", "--redo"):
        assert opt in out, opt


@pytest.mark.skipif(not os.environ.get("FACEMASK_EDGE_FULL_DEMO"), reason="set FACEMASK_EDGE_FULL_DEMO=1")
def test_full_demo_under_a_minute_and_a_half(tmp_path):
    t = time.monotonic()
    assert main(["pipeline", "--demo", "--out", str(tmp_path / "demo")]) == 0
    assert time.monotonic() - t < 90


def test_example_config_parses(tmp_path):
    root = Path(__file__).resolve().parents[1]
    cfg = build_config({"out": str(tmp_path / "r")}, root / "benchmarks" / "pipeline.example.toml")
    assert cfg.board == "nano33ble" and cfg.train["size"] == 64 and cfg.train["blocks"] == 5
    assert Path(cfg.train["weights"]).resolve() == (root.parent / "shared" / "weights" / "vww_96.h5").resolve()
    assert cfg.quantization == "best" and cfg.sim == "subprocess"


@pytest.mark.slow
def test_benchmark_report_from_a_run(demo_run, tmp_path):
    """benchmarks/run_benchmark.py's measuring and report code on the demo run (the PTQ model
    standing in for the reference; the real script uses vww_96_int8.tflite)."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("run_benchmark", root / "benchmarks" / "run_benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    run_pipeline(demo_cfg(demo_run))  # whatever earlier tests left: complete again
    measured = bench.measure(demo_run, demo_run / "model_int8_ptq.tflite")
    res = bench.collect(summary(demo_run), measured, demo_run, "nano33ble")
    assert res["agreement"]["device_vs_host_bit_exact"] == 1.0
    assert res["accuracy"]["int8_device"]["accuracy"] == res["accuracy"]["int8_host_tflm"]["accuracy"]
    assert res["model"]["arena_bytes"] > 0 and res["reference"]["macs"] == res["model"]["macs"]
    assert set(res["checks"]) >= {"device_accuracy", "arena_vs_reference", "flash_vs_reference",
                                  "latency_64mhz_upper_estimate_ms", "pipeline_seconds"}
    md = bench.markdown({"command": "c", "pipeline_command": "p", "pipeline_exit": 0, "run": str(demo_run),
                         "board": "nano33ble", "data": "d", "machine": bench.machine(), "bench": res,
                         "pipeline_wall_seconds": 1.0})
    for text in ("## Accuracy on the test split", "## Targets (issue 7)", "| validate |", "cores"):
        assert text in md, text


@pytest.mark.slow
@pytest.mark.emulator
@needs_emulator
def test_measure_puts_the_emulated_latency_beside_the_estimate(demo_run):
    """--measure re-runs only the profile stage; the summary quotes the measured Nano latency (and
    the camera frame's, preprocessing included) next to the estimate, with the CPI range."""
    assert main(["pipeline", "--demo", "--out", str(demo_run), *FAST_DEMO, "--measure",
                 "--tflm", str(tflm_tree())]) == 0
    s = summary(demo_run)
    assert [k for k in STAGES[1:] if s["stages"][k]["status"] == "done"] == ["profile"]
    nano = s["stages"]["profile"]["figures"]["boards"]["nano33ble"]
    m = json.loads((demo_run / "emulate" / "measure.json").read_text())
    assert nano["measured_latency_ms"] == [round(v, 2) for v in m["invoke_ms"]]
    lo, hi = nano["measured_frame_ms"]
    assert lo > nano["measured_latency_ms"][0] and hi / lo == pytest.approx(1.5, rel=1e-3)
    assert s["headline"]["measured_frame_ms_nano33ble"] == nano["measured_frame_ms"]
    assert "esp32cam" not in {k.split("_ms_")[-1] for k in s["headline"] if k.startswith("measured")}
    md = (demo_run / "summary.md").read_text()
    assert "measured" in md and "cycles/instruction; estimate" in md
