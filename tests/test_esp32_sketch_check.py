"""The ESP32-CAM sketch, exported for a model, is valid C/C++ against the real esp-tflite-micro,
esp32-camera, esp_jpeg and ESP-IDF headers (scripts/check_esp32_sketch.py), warning-free.

The headers are not in the repository and cannot be downloaded in CI (no network): these tests
skip there, saying so, unless FACEMASK_EDGE_ESP32_HEADERS names a folder prepared with
``scripts/check_esp32_sketch.py --prepare`` (see firmware/README.md). With the headers the first
test takes about 40 s (two .ino variants, src/, the resolver table), the second about 10 s.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from tests._fixtures import fixture_model

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_esp32_sketch.py"


def _load():
    spec = importlib.util.spec_from_file_location("check_esp32_sketch", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


check = _load()
HEADERS = check.headers_dir()
WHY = check.missing_headers(HEADERS)
needs_headers = pytest.mark.skipif(
    WHY is not None, reason=f"{WHY} (CI has no network to fetch them, so this check is local-only)")


@pytest.fixture(scope="module")
def sketch(tmp_path_factory):
    from facemask_edge.device.testing import make_tiny_run
    from facemask_edge.export import export_run

    root = tmp_path_factory.mktemp("esp32check")
    run = make_tiny_run(root / "run", size=32, per_class=1, model=fixture_model("sketch_rgb32"))
    return export_run(run, "esp32cam", out=root / "export").path


@needs_headers
def test_sketch_compiles_against_the_real_sdk_headers_warning_free(sketch, tmp_path):
    r = check.check_sketch(sketch, HEADERS, tmp_path)
    print(r.summary())
    assert r.errors == []
    assert r.project_warnings == []
    # Both .ino variants, every src/ unit, and the resolver table were compiled.
    n_src = sum(1 for p in (sketch / "src").iterdir() if p.suffix in (".c", ".cc", ".cpp"))
    assert len(r.units) == len(check.INO_VARIANTS) + n_src + 1 and n_src >= 5


@needs_headers
def test_a_wrong_sdk_call_or_a_warning_fails_the_check(sketch, tmp_path):
    """The check can fail: a camera field, a driver call and a TFLM method that do not exist are
    errors, and a warning in the sketch is reported as the project's."""
    bad = tmp_path / "esp32cam"
    shutil.copytree(sketch, bad)
    board = bad / "esp32cam_board.h"
    board.write_text(board.read_text().replace("c.pin_sccb_sda =", "c.pin_sda ="))
    ino = bad / "esp32cam.ino"
    ino.write_text(ino.read_text().replace("esp_camera_fb_return(fb);", "esp_camera_fb_return(fb, 0);")
                   .replace("  int rc;\n", "  int rc;\n  int unused_here;\n"))
    ops = bad / "src" / "model_ops.h"
    ops.write_text(ops.read_text().replace("AddConv2D()", "AddConv2d()"))
    r = check.check_sketch(bad, HEADERS, tmp_path / "work", variants={"rgb565": ()}, sources=False)
    text = "\n".join(r.errors)
    assert not r.ok
    assert "pin_sda" in text and "esp32cam_board.h" in text
    assert "esp_camera_fb_return" in text
    assert "AddConv2d" in text
    assert any("unused_here" in w and "esp32cam.ino" in w for w in r.project_warnings)


def test_without_headers_the_script_says_how_to_get_them(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(check.HEADERS_ENV, raising=False)
    assert check.main(["--headers", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--prepare" in err[0]
    assert check.main([]) == 2
    assert check.HEADERS_ENV in capsys.readouterr().err
