"""`facemask-edge export`: C arrays, generated settings and op resolver, sketches and Arduino
library zips, from real int8 models (checked in: tests/fixtures, converted with TFLiteConverter by
tests/fixtures/generate.py)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _fixtures import fixture_model, tf_ops

from facemask_edge.cli import main as cli_main
from facemask_edge.errors import BudgetError, ConversionError, ModelError
from facemask_edge.export import export_run
from facemask_edge.artifacts.tflite import RESOLVER_METHODS, read_tflite

pytestmark = [pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")]

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("model_data.cc", "model_data.h", "model_settings.h", "model_ops.h", "facemask_edge.h")
COMMON = ("fe_inference.cc", "fe_inference.h", "fe_preprocess.c", "fe_preprocess.h",
          "fe_protocol.c", "fe_protocol.h", "fe_result.c", "fe_result.h")


def _arena_bytes(model: bytes) -> int:
    """Arena TFLM's recording allocator reports."""
    from facemask_edge.convert.runtimes import measure_arena

    return measure_arena(model)["total"]


@pytest.fixture(scope="session")
def models():
    """Three real int8 models: RGB 2 classes, grayscale 3 classes, and one far too big (checked in:
    tests/fixtures/generate.py shows how they were converted)."""
    return {"rgb": fixture_model("export_rgb32"), "gray": fixture_model("export_gray24"),
            "huge": fixture_model("export_huge320")}


def make_run(root: Path, model: bytes, labels, color: str, name: str = "run1") -> Path:
    """A converted run folder as `convert` writes it (model, card, labels)."""
    info = read_tflite(model)
    inp, out = info.inputs[0], info.outputs[0]
    run = root / name
    run.mkdir(parents=True)
    (run / "model_int8.tflite").write_bytes(model)
    (run / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
    card = {
        "schema": 1, "model": "model_int8.tflite", "sha256": hashlib.sha256(model).hexdigest(),
        "flatbuffer_bytes": len(model), "quantization": "ptq",
        "input": {"shape": list(inp.shape), "dtype": "int8", "scale": inp.scale,
                  "zero_point": inp.zero_point, "size": inp.shape[1], "color": color},
        "output": {"shape": list(out.shape), "dtype": "int8", "scale": out.scale,
                   "zero_point": out.zero_point},
        "labels": list(labels),
        "ops": [{"name": o.name, "version": o.version, "count": o.count} for o in info.op_uses],
        "arena_bytes": _arena_bytes(model), "run": name, "versions": {},
    }
    (run / "model_card.json").write_text(json.dumps(card, indent=2))
    return run


@pytest.fixture(scope="session")
def runs(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {
        "rgb": make_run(root, models["rgb"], ["with_mask", "without_mask"], "rgb", "rgb_run"),
        "gray": make_run(root, models["gray"], ["mask_weared_incorrect", "with_mask", "without_mask"],
                         "grayscale", "gray_run"),
        "huge": make_run(root, models["huge"], ["with_mask", "without_mask"], "rgb", "huge_run"),
    }


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tflite_ops(model: bytes) -> set[str]:
    """Op names as TensorFlow's own interpreter reported them (independent of our parser),
    recorded when the fixture was generated."""
    return tf_ops(model)


@pytest.mark.parametrize("board", ["nano33ble", "esp32cam"])
def test_sketch_export_writes_everything_and_is_byte_identical(runs, board, tmp_path):
    first = export_run(runs["rgb"], board, out=tmp_path / "a")
    sketch = tmp_path / "a" / board
    assert first.path == sketch
    files = tree_bytes(sketch)
    assert f"{board}.ino" in files
    for name in (*GENERATED, *COMMON):
        assert f"src/{name}" in files, name
    assert first.files and all(p.is_file() for p in first.files)

    # Same input, same bytes: into a fresh folder and over the first export.
    export_run(runs["rgb"], board, out=tmp_path / "b")
    assert tree_bytes(tmp_path / "b" / board) == files
    again = export_run(runs["rgb"], board, out=tmp_path / "a")
    assert again.files == []  # nothing rewritten
    assert tree_bytes(sketch) == files

    # Copies of firmware/common are verbatim; the hand-written sketch too.
    for name in COMMON:
        assert files[f"src/{name}"] == (ROOT / "firmware/common" / name).read_bytes()
    assert files[f"{board}.ino"] == (ROOT / "firmware/boards" / board / f"{board}.ino").read_bytes()


@pytest.mark.parametrize("kind", ["rgb", "gray"])
def test_resolver_lists_exactly_the_models_ops(runs, models, kind, tmp_path):
    export_run(runs[kind], "nano33ble", out=tmp_path)
    text = (tmp_path / "nano33ble/src/model_ops.h").read_text()
    adds = re.findall(r"resolver\.(Add\w+)\(\)", text)
    want = tflite_ops(models[kind])
    assert sorted(adds) == sorted(RESOLVER_METHODS[op] for op in want)
    assert len(adds) == len(set(adds))
    assert f"#define FE_MODEL_OP_COUNT {len(want)}\n" in text
    assert "MicroMutableOpResolver<FE_MODEL_OP_COUNT>" in text
    if kind == "gray":
        assert {"ADD", "PAD", "AVERAGE_POOL_2D"} <= want


def test_model_array_round_trips_and_compiles(runs, tmp_path):
    export_run(runs["rgb"], "esp32cam", out=tmp_path)
    src = tmp_path / "esp32cam/src"
    text = (src / "model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_facemask_model_data[] = {" in text
    body = text.split("= {", 1)[1].split("};", 1)[0]
    data = bytes(int(h, 16) for h in re.findall(r"0x([0-9a-f]{2})", body))
    model = (runs["rgb"] / "model_int8.tflite").read_bytes()
    assert data == model
    # Compile the array with g++ and check size, alignment and content from C++.
    main = tmp_path / "main.cc"
    main.write_text(
        '#include <cstdio>\n#include <cstdint>\n#include "model_data.h"\n'
        "int main() {\n  unsigned long h = 5381;\n"
        "  for (unsigned i = 0; i < g_facemask_model_data_size; ++i) h = h * 33 + g_facemask_model_data[i];\n"
        '  std::printf("%u %lu %lu\\n", g_facemask_model_data_size, '
        "(unsigned long)((uintptr_t)g_facemask_model_data % 16), h & 0xffffffffUL);\n}\n")
    exe = tmp_path / "check"
    subprocess.run(["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-I", str(src), str(main),
                    str(src / "model_data.cc"), "-o", str(exe)], check=True)
    size, align, h = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    want_h = 5381
    for b in model:
        want_h = (want_h * 33 + b) & 0xFFFFFFFFFFFFFFFF
    assert (int(size), int(align), int(h)) == (len(model), 0, want_h & 0xFFFFFFFF)


def test_settings_header_compiles_with_the_cards_values(runs, tmp_path):
    export_run(runs["gray"], "nano33ble", out=tmp_path)
    src = tmp_path / "nano33ble/src"
    card = json.loads((runs["gray"] / "model_card.json").read_text())
    main = tmp_path / "s.c"
    main.write_text(
        '#include <stdio.h>\n#include "model_settings.h"\n'
        "int main(void) {\n"
        '  printf("%d %d %d %d %d\\n", FE_INPUT_WIDTH, FE_INPUT_HEIGHT, FE_INPUT_CHANNELS, '
        "FE_INPUT_GRAYSCALE, FE_NUM_CLASSES);\n"
        '  printf("%.9g %d %.9g %d\\n", (double)FE_INPUT_SCALE, FE_INPUT_ZERO_POINT, '
        "(double)FE_OUTPUT_SCALE, FE_OUTPUT_ZERO_POINT);\n"
        '  for (int i = 0; i < FE_NUM_CLASSES; ++i) printf("%s %d\\n", kFeLabels[i], kFeLabelLed[i]);\n'
        '  printf("%s %s %s %u %u %u\\n", FE_MODEL_SHA256, FE_BOARD, FE_MODEL_QUANTIZATION, '
        "FE_ARENA_USED_BYTES, FE_ARENA_SIZE, FE_MODEL_BYTES);\n}\n")
    exe = tmp_path / "s"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-Wno-unused-variable", "-I",
                    str(src), str(main), "-o", str(exe)], check=True)
    lines = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines[0] == "24 24 1 1 3"
    in_scale, in_zp, out_scale, out_zp = lines[1].split()
    assert np.float32(float(in_scale)) == np.float32(card["input"]["scale"]) and int(in_zp) == -128
    assert np.float32(float(out_scale)) == np.float32(card["output"]["scale"])
    assert int(out_zp) == card["output"]["zero_point"]
    assert lines[2:5] == ["mask_weared_incorrect 3", "with_mask 2", "without_mask 1"]
    sha, board, quant, used, size, nbytes = lines[5].split()
    assert sha == card["sha256"] and board == "nano33ble" and quant == "ptq"
    assert int(used) == card["arena_bytes"]
    assert int(size) >= int(used) + 1024 and int(size) % 16 == 0
    assert int(nbytes) == card["flatbuffer_bytes"]


def test_settings_escape_labels(runs, models, tmp_path):
    run = make_run(tmp_path, models["rgb"], ['with "mask"?', "ohne_maske_é"], "rgb", "odd")
    export_run(run, "nano33ble", out=tmp_path / "o")
    src = tmp_path / "o/nano33ble/src"
    main = tmp_path / "l.c"
    main.write_text('#include <stdio.h>\n#include "model_settings.h"\n'
                    'int main(void) { printf("%s|%s", kFeLabels[0], kFeLabels[1]); return 0; }\n')
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Werror", "-Wno-unused-variable", "-I", str(src),
                    str(main), "-o", str(tmp_path / "l")], check=True)
    out = subprocess.run([str(tmp_path / "l")], capture_output=True, check=True).stdout
    assert out.decode() == 'with "mask"?|ohne_maske_é'


def test_refuses_a_model_that_does_not_fit(runs, tmp_path):
    for board in ("nano33ble", "esp32cam"):
        with pytest.raises(BudgetError, match="does not fit"):
            export_run(runs["huge"], board, out=tmp_path)
    assert not (tmp_path / "nano33ble").exists()


def test_cli_refusal_is_one_line_with_exit_3(runs, tmp_path, capsys):
    rc = cli_main(["export", str(runs["huge"]), "--board", "nano33ble", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 3
    assert err.startswith("error: the model does not fit") and err.count("\n") == 1
    assert "Traceback" not in err


def test_cli_export_prints_summary(runs, tmp_path, capsys):
    rc = cli_main(["export", str(runs["rgb"]), "--board", "esp32cam", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert str(tmp_path / "esp32cam") in out
    assert "CONV_2D" in out and "arena" in out
    assert (tmp_path / "esp32cam/src/model_settings.h").is_file()


def test_arduino_library_zip(runs, tmp_path):
    res = export_run(runs["rgb"], "nano33ble", out=tmp_path, fmt="arduino-library")
    assert res.path == tmp_path / "FacemaskEdge_nano33ble.zip"
    first = res.path.read_bytes()
    export_run(runs["rgb"], "nano33ble", out=tmp_path / "again", fmt="arduino-library")
    assert (tmp_path / "again/FacemaskEdge_nano33ble.zip").read_bytes() == first

    with zipfile.ZipFile(res.path) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        top = {n.split("/")[0] for n in names}
        assert top == {"FacemaskEdge_nano33ble"}
        lib = "FacemaskEdge_nano33ble/"
        for name in (*GENERATED, *COMMON):
            assert f"{lib}src/{name}" in names
        props = dict(line.split("=", 1) for line in zf.read(lib + "library.properties").decode().splitlines())
        ino = zf.read(f"{lib}examples/nano33ble/nano33ble.ino").decode()
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
    assert props["name"] == "FacemaskEdge_nano33ble"
    assert props["architectures"] == "mbed_nano"
    assert props["includes"] == "facemask_edge.h"
    assert props["depends"] == "Chirale_TensorFLowLite (=2.0.0), Arduino_OV767X (=0.0.2)"
    assert re.fullmatch(r"\d+\.\d+\.\d+", props["version"])
    assert "#include <facemask_edge.h>" in ino and '"src/facemask_edge.h"' not in ino
    assert f"{lib}examples/nano33ble/nano33ble_camera.h" in names


def test_arduino_library_default_location_and_esp32(runs, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(runs["rgb"], run)
    res = export_run(run, "esp32cam", fmt="arduino-library")
    assert res.path == run / "export" / "FacemaskEdge_esp32cam.zip"
    with zipfile.ZipFile(res.path) as zf:
        props = zf.read("FacemaskEdge_esp32cam/library.properties").decode()
    assert "architectures=esp32\n" in props and "depends=" not in props


def test_default_location_is_the_run_and_firmware_is_only_read(runs, tmp_path, monkeypatch, capsys):
    """`export RUN` writes RUN/export/<board>/ (issue 11, behaviour 9); the firmware/ tree it reads
    ($FACEMASK_EDGE_FIRMWARE here, a copy with a marked sketch) is left byte for byte as it was."""
    firmware = tmp_path / "firmware"
    shutil.copytree(ROOT / "firmware", firmware, ignore=shutil.ignore_patterns("src", "build"))
    ino = firmware / "boards/nano33ble/nano33ble.ino"
    ino.write_text(ino.read_text() + "// from the FACEMASK_EDGE_FIRMWARE copy\n")
    monkeypatch.setenv("FACEMASK_EDGE_FIRMWARE", str(firmware))
    before = tree_bytes(firmware)
    run = tmp_path / "r"
    shutil.copytree(runs["rgb"], run)
    stale = run / "export/nano33ble/src/old_model.h"
    stale.parent.mkdir(parents=True)
    stale.write_text("// from an older export\n")

    res = export_run(run, "nano33ble")
    assert res.path == run / "export" / "nano33ble"
    assert (res.path / "src/model_ops.h").is_file() and not stale.exists()
    assert (res.path / "nano33ble.ino").read_bytes() == ino.read_bytes()  # the template came from there
    rc = cli_main(["export", str(run), "--board", "esp32cam"])
    assert rc == 0 and f"--sketch {run / 'export' / 'esp32cam'}" in capsys.readouterr().out
    assert (run / "export/esp32cam/src/model_data.cc").is_file()
    assert tree_bytes(firmware) == before


def test_firmware_dir_variable_must_point_at_firmware(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEMASK_EDGE_FIRMWARE", str(tmp_path / "nowhere"))
    rc = cli_main(["export", str(runs["rgb"]), "--board", "nano33ble", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "firmware sources not found ($FACEMASK_EDGE_FIRMWARE = " in err
    assert not (tmp_path / "o").exists()


def test_card_for_another_model_is_refused(runs, models, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(runs["rgb"], run)
    (run / "model_int8.tflite").write_bytes(models["gray"])
    with pytest.raises(ModelError, match="sha256 differs"):
        export_run(run, "nano33ble", out=tmp_path / "o")


def test_missing_files_and_bad_inputs(runs, tmp_path, capsys):
    with pytest.raises(ModelError, match="model_int8.tflite not found"):
        export_run(tmp_path, "nano33ble")
    rc = cli_main(["export", str(tmp_path), "--board", "nano33ble"])
    err = capsys.readouterr().err
    assert rc == 1 and "convert" in err and err.count("\n") == 1
    rc = cli_main(["export", str(runs["rgb"]), "--board", "uno"])
    err = capsys.readouterr().err
    assert rc == 1 and err == "error: unknown board 'uno' (use one of nano33ble, esp32cam)\n"


def test_not_a_tflite_and_wrong_quantization(runs, models, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(runs["rgb"], run)
    (run / "model_int8.tflite").write_bytes(b"\x00" * 64)
    card = json.loads((run / "model_card.json").read_text())
    card["sha256"] = hashlib.sha256(b"\x00" * 64).hexdigest()
    (run / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not a valid TFLite model"):
        export_run(run, "nano33ble", out=tmp_path / "out")
    # A card that promises another input size than the flatbuffer has.
    run2 = tmp_path / "r2"
    shutil.copytree(runs["rgb"], run2)
    card = json.loads((run2 / "model_card.json").read_text())
    card["input"]["size"] = 96
    (run2 / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ConversionError, match=r"int8 \[1, 96, 96, 3\]"):
        export_run(run2, "nano33ble", out=tmp_path / "out")


def test_the_firmware_names_the_run_by_its_folder_not_the_path_it_was_trained_to(runs, tmp_path):
    """A card written by `train --out /home/me/long/path/run` carried that path into the firmware's
    boot line: it told the device's reader where the user keeps files, and a long one overflowed
    the emulator board's 160-byte boot line (a compile error under -Werror)."""
    import json
    import shutil

    run = tmp_path / "rgb_copy"
    shutil.copytree(runs["rgb"], run)
    card = json.loads((run / "model_card.json").read_text())
    card["run"] = "/home/someone/" + "deep/" * 40 + "my_run"
    (run / "model_card.json").write_text(json.dumps(card))
    export_run(run, "nano33ble", out=tmp_path / "out")
    settings = (tmp_path / "out/nano33ble/src/model_settings.h").read_text()
    assert '#define FE_MODEL_RUN "my_run"' in settings
    assert "/home/someone" not in settings
