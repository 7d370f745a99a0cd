"""``ei profile`` / ``ei deploy`` (bring your own model through the SDK) against the loopback
Edge Impulse: what is sent, what is saved and printed, and the errors."""

from __future__ import annotations

import json
import secrets
import socket
import sys
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from ei_server import EIServer  # noqa: E402

from facemask_edge.artifacts.tflite import Tensor  # noqa: E402
from facemask_edge.cli import cli  # noqa: E402
from facemask_edge.edge_impulse.model import _scaling, comparison_lines, load_run_model  # noqa
from facemask_edge.errors import EdgeImpulseError, ModelError  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_int8.tflite"

OURS = {"board": "nano33ble", "arena_bytes": 5120, "arena_with_margin_bytes": 6144,
        "flash_bytes": 40960, "latency_ms": [3.0, 6.0], "fits": True}


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """A run with the checked-in tiny int8 model (no TensorFlow needed)."""
    run = tmp_path_factory.mktemp("ei_model") / "template"
    run.mkdir()
    (run / "model_int8.tflite").write_bytes(FIXTURE.read_bytes())
    (run / "labels.txt").write_text("with_mask\nwithout_mask\n")
    return run


@pytest.fixture()
def run(model_run, tmp_path):
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(model_run, dst)
    (dst / "profile_nano33ble.json").write_text(json.dumps(OURS))
    return dst


@pytest.fixture()
def key():
    return "ei_" + secrets.token_hex(32)


@pytest.fixture()
def server(key):
    with EIServer(key) as srv:
        yield srv


def _invoke(server, key, *args):
    return CliRunner().invoke(cli, ["ei", *args], env=server.env(key), catch_exceptions=True)


def test_profile_sends_the_model_and_prints_both_figures(server, key, run):
    res = _invoke(server, key, "profile", str(run))
    assert res.exit_code == 0, res.output
    model = (run / "model_int8.tflite").read_bytes()
    (up,) = server.requests_to(r"/pretrained-model/upload$", "POST")
    assert up.headers["x-api-key"] == key
    assert up.headers["content-type"].startswith("multipart/form-data")
    (name, data, _ctype), = up.form["modelFile"]
    assert data == model and name == "model_int8.tflite"
    assert up.form["modelFileName"] == ["model_int8.tflite"]
    assert up.form["modelFileType"] == ["tflite"]
    assert up.form["device"] == ["arduino-nano-33-ble"]  # from profile_nano33ble.json
    assert server.requests_to(r"/pretrained-model/profile$", "POST")
    # what the service computed is what was saved and printed
    saved = json.loads((run / "ei_profile.json").read_text())
    int8 = server.state.profile["int8"]
    got = saved["edge_impulse"]["model"]["profileInfo"]["int8"]
    assert got["memory"]["tflite"] == int8["memory"]["tflite"]
    assert got["timePerInferenceMs"] == int8["timePerInferenceMs"]
    assert saved["device"] == "arduino-nano-33-ble" and saved["ours"]["nano33ble"] == OURS
    out = res.output
    ram_line = next(ln for ln in out.splitlines() if ln.strip().startswith("RAM"))
    assert f"{int8['memory']['tflite']['ram'] / 1024:.1f} KiB" in ram_line
    assert f"{OURS['arena_with_margin_bytes'] / 1024:.1f} KiB" in ram_line
    lat = next(ln for ln in out.splitlines() if ln.strip().startswith("Latency"))
    assert f"{int8['timePerInferenceMs']} ms" in lat and "3-6 ms" in lat
    assert "facemask-edge nano33ble" in out and key not in out


def test_deploy_sends_labels_and_scaling_and_saves_the_library(server, key, run):
    (run / "labels.txt").write_text("mask on\nno mask\n")
    res = _invoke(server, key, "deploy", str(run), "--target", "arduino", "--engine", "tflite-eon")
    assert res.exit_code == 0, res.output
    (save,) = server.requests_to(r"/pretrained-model/save$", "POST")
    assert save.headers["content-type"].startswith("application/json")
    # the resize mode of our centre-crop preprocessing (issue 15.2)
    assert save.json == {"input": {"inputType": "image", "inputScaling": "0..1",
                                   "resizeMode": "fit-short"},
                         "model": {"modelType": "classification", "labels": ["mask on", "no mask"]}}
    # an empty project: the model went to a new impulse of ours, named so, in every call
    (imp,) = server.state.impulses.values()
    assert imp.name.startswith("facemask-edge") and imp.type == "BYOM"
    ours = [str(imp.id)]
    (up,) = server.requests_to(r"/pretrained-model/upload$", "POST")
    assert up.form["modelFile"][0][1] == (run / "model_int8.tflite").read_bytes()
    assert "device" not in up.form and up.query["impulseId"] == ours
    assert save.query["impulseId"] == ours
    (build,) = server.requests_to(r"/jobs/build-ondevice-model$", "POST")
    assert build.query == {"type": ["arduino"], "impulseId": ours}
    assert build.json == {"engine": "tflite-eon", "modelType": "int8"}
    (dl,) = server.requests_to(r"/deployment/download$", "GET")
    assert dl.query == {"type": ["arduino"], "engine": ["tflite-eon"], "modelType": ["int8"],
                        "impulseId": ours}
    out = run / "ei_arduino_tflite-eon.zip"
    assert out.read_bytes() == server.state.builds[("arduino", "tflite-eon", "int8")]
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        meta = json.loads(zf.read(next(n for n in names if n.endswith("deployment.json"))))
        tfl = zf.read(next(n for n in names if n.endswith(".tflite")))
    assert tfl == (run / "model_int8.tflite").read_bytes()
    assert meta["labels"] == ["mask on", "no mask"] and meta["input"]["inputScaling"] == "0..1"
    info = json.loads((run / "ei_deploy.json").read_text())
    assert info["zip"] == out.name and info["bytes"] == out.stat().st_size
    assert info["resize_mode"] == "fit-short" and info["impulse"] == imp.id
    assert f"saved {out}" in res.output and key not in json.dumps(info)
    # a second deploy recognises the impulse as ours and uses it without asking
    res = _invoke(server, key, "deploy", str(run), "--target", "zip")
    assert res.exit_code == 0, res.output
    assert len(server.state.impulses) == 1
    assert server.requests_to(r"/deployment/download$")[-1].query["impulseId"] == ours


def test_the_resize_mode_is_what_our_preprocessing_does_and_what_the_api_knows():
    """Centre crop to the short side, then resize: Edge Impulse's ``fit-short``."""
    from facemask_edge.data.preprocess import center_crop_box
    from facemask_edge.edge_impulse.model import RESIZE_MODE, save_request

    assert center_crop_box(100, 60) == (20, 0, 60)  # the short side kept whole, long one cut
    assert center_crop_box(60, 100) == (0, 20, 60)
    assert RESIZE_MODE == "fit-short"
    pytest.importorskip("edgeimpulse_api")
    from edgeimpulse_api.models.deploy_pretrained_model_input_image import \
        DeployPretrainedModelInputImage
    from edgeimpulse_api.models.image_input_resize_mode import ImageInputResizeMode
    from edgeimpulse_api.models.save_pretrained_model_request import SavePretrainedModelRequest

    m = load_run_model(_fixture_run())
    body = save_request(m)
    parsed = DeployPretrainedModelInputImage.parse_obj(body["input"])
    assert parsed.resize_mode is ImageInputResizeMode.FIT_SHORT  # a value the API knows
    assert SavePretrainedModelRequest.from_dict(body).to_dict()["input"]["resizeMode"] == \
        "fit-short"


def _fixture_run() -> Path:
    import tempfile

    run = Path(tempfile.mkdtemp()) / "run"
    run.mkdir()
    (run / "model_int8.tflite").write_bytes(FIXTURE.read_bytes())
    (run / "labels.txt").write_text("with_mask\nwithout_mask\n")
    return run


def test_transient_studio_errors_are_retried(server, key, run):
    server.script(r"/pretrained-model/upload$", "503", times=1)
    server.script(r"/deployment/download$", "drop_after", times=1)
    res = _invoke(server, key, "deploy", str(run), "--target", "zip")
    assert res.exit_code == 0, res.output
    assert len(server.requests_to(r"/pretrained-model/upload$")) >= 2
    assert (run / "ei_zip_tflite.zip").is_file()


def test_bad_device_and_target_list_the_valid_ones(server, key, run):
    res = _invoke(server, key, "profile", str(run), "--device", "mortex-c4")
    assert isinstance(res.exception, EdgeImpulseError)
    assert "no profiling device 'mortex-c4'" in str(res.exception)
    assert "cortex-m4f-80mhz" in str(res.exception)
    res = _invoke(server, key, "deploy", str(run), "--target", "toaster")
    assert "no deployment target 'toaster'" in str(res.exception)
    assert "arduino" in str(res.exception)


def test_bad_key_and_unreachable_api_are_one_line(server, key, run):
    bad = "ei_" + secrets.token_hex(32)
    res = CliRunner().invoke(cli, ["ei", "profile", str(run)], env=server.env(bad))
    msg = str(res.exception)
    assert isinstance(res.exception, EdgeImpulseError)
    assert msg.startswith("Edge Impulse rejected the API key (401: Invalid API key)")
    assert bad not in msg and "\n" not in msg
    assert not server.requests_to(r"pretrained-model")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)  # accepts (kernel backlog) and never answers
    url = f"http://127.0.0.1:{s.getsockname()[1]}"
    try:
        t0 = time.monotonic()
        res = CliRunner().invoke(cli, ["ei", "deploy", str(run), "--api-key", key,
                                       "--api-endpoint", url + "/v1", "--timeout", "1"])
        assert time.monotonic() - t0 < 5
    finally:
        s.close()
    assert str(res.exception).startswith(f"cannot reach the Edge Impulse API at {url}/v1 "
                                         "(timed out")


def test_run_problems_fail_before_the_network(tmp_path, model_run, key):
    res = CliRunner().invoke(cli, ["ei", "profile", str(tmp_path)], env={"EI_API_KEY": key})
    assert isinstance(res.exception, ModelError) and "convert" in str(res.exception)
    import shutil

    run = tmp_path / "r"
    shutil.copytree(model_run, run)
    (run / "labels.txt").write_text("a\nb\nc\n")
    with pytest.raises(ModelError, match="2 outputs but labels.txt lists 3"):
        load_run_model(run)


def _input(dtype: str, scale: float | None, zero_point: int | None) -> Tensor:
    return Tensor(index=0, name="input", shape=(1, 24, 24, 3), dtype=dtype,
                  scales=() if scale is None else (scale,),
                  zero_points=() if zero_point is None else (zero_point,),
                  quantized_dimension=0, buffer=0, data_bytes=0)


def test_input_scaling_from_quantization():
    p = Path("m.tflite")
    assert _scaling(_input("int8", 1 / 255, -128), p) == "0..1"
    assert _scaling(_input("int8", 1.0, -128), p) == "0..255"
    assert _scaling(_input("uint8", 1 / 255, 0), p) == "0..1"
    with pytest.raises(ModelError, match="covers"):
        _scaling(_input("int8", 2 / 255, 0), p)
    with pytest.raises(ModelError, match="not a quantized"):
        _scaling(_input("float32", None, None), p)


def test_comparison_without_a_device_uses_the_device_table():
    table = {"variant": "int8",
             "lowEndMcu": {"description": "M0+", "supported": False, "timePerInferenceMs": 900,
                           "memory": {"tflite": {"ram": 40960, "rom": 81920}}},
             "highEndMcu": {"description": "M7", "supported": True, "timePerInferenceMs": 50,
                            "memory": {"tflite": {"ram": 40960, "rom": 81920}}}}
    lines = comparison_lines({"model": "model_int8.tflite", "device": None,
                              "edge_impulse": {"model": {"profileInfo": {"table": table}}},
                              "ours": {"esp32cam": {"arena_bytes": 1024, "flash_bytes": 2048,
                                                    "latency_ms": [10, 12]}}})
    text = "\n".join(lines)
    assert "across Edge Impulse's device classes" in lines[0]
    assert "EI low-end MCU" in text and "facemask-edge esp32cam" in text
    assert "900 ms" in text and "10-12 ms" in text and "40.0 KiB" in text
