"""`facemask-edge flash`: arduino-cli commands, toolchain and board checks, error messages.

arduino-cli cannot be installed here (it is no Debian or PyPI package), so the checks run against
a stand-in executable that answers with recorded arduino-cli JSON (0.x and 1.x shapes) and logs
the compile/upload calls it receives. The dry-run output and the parsers are tested directly.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import sys
from pathlib import Path

import pytest

from facemask_edge.cli import main as cli_main
from facemask_edge.errors import DeviceError, ToolMissing
from facemask_edge.boards import BOARDS
from facemask_edge.flash.arduino_cli import (check_toolchain, find_port, flash, parse_board_list,
                                             parse_core_list, parse_lib_list, parse_version, plan_flash)

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")

ROOT = Path(__file__).resolve().parents[1]

# Recorded arduino-cli outputs (trimmed to the fields that matter, shapes as printed).
VERSION_1X = {"Application": "arduino-cli", "VersionString": "1.1.1", "Commit": "fa6eafcb",
              "Status": "", "Date": "2024-11-29T09:34:55Z"}
CORES_1X = {"platforms": [
    {"id": "arduino:mbed_nano", "maintainer": "Arduino", "installed_version": "4.2.1",
     "latest_version": "4.2.1", "releases": {"4.2.1": {"name": "Arduino Mbed OS Nano Boards"}}},
    {"id": "esp32:esp32", "maintainer": "Espressif Systems", "installed_version": "3.1.1",
     "latest_version": "3.1.1"}]}
CORES_0X = [{"id": "arduino:mbed_nano", "installed": "4.0.10", "latest": "4.0.10",
             "name": "Arduino Mbed OS Nano Boards"},
            {"id": "esp32:esp32", "installed": "2.0.17", "latest": "2.0.17", "name": "esp32"}]
LIBS_1X = {"installed_libraries": [
    {"library": {"name": "Arduino_OV767X", "version": "0.0.2", "location": "user"}},
    {"library": {"name": "Chirale_TensorFLowLite", "version": "2.0.0", "location": "user"}}]}
LIBS_0X = [{"library": {"name": "Arduino_OV767X", "version": "0.0.2"}}]
BOARDS_1X = {"detected_ports": [
    {"matching_boards": [{"name": "Arduino Nano 33 BLE", "fqbn": "arduino:mbed_nano:nano33ble"}],
     "port": {"address": "/dev/ttyACM0", "label": "/dev/ttyACM0", "protocol": "serial",
              "protocol_label": "Serial Port (USB)",
              "properties": {"pid": "0x805A", "serialNumber": "ABC", "vid": "0x2341"}}},
    {"port": {"address": "/dev/ttyUSB0", "label": "/dev/ttyUSB0", "protocol": "serial",
              "protocol_label": "Serial Port (USB)", "properties": {"pid": "0x7523", "vid": "0x1A86"}}},
    {"port": {"address": "/dev/ttyS0", "label": "/dev/ttyS0", "protocol": "serial",
              "protocol_label": "Serial Port"}}]}
BOARDS_0X = [{"port": {"address": "/dev/ttyACM1", "protocol": "serial",
                       "properties": {"pid": "0x805a", "vid": "0x2341"}},
              "matching_boards": [{"name": "Arduino Nano 33 BLE", "fqbn": "arduino:mbed_nano:nano33ble"}]}]

FAKE_CLI = r'''#!{python}
"""Stand-in arduino-cli: answers from {config}, logs every call to {log}."""
import json, sys
cfg = json.load(open({config!r}))
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\n")
for name in ("version", "core list", "lib list", "board list"):
    if " ".join(args[:len(name.split())]) == name:
        print(json.dumps(cfg[name]))
        sys.exit(0)
if args[0] in ("compile", "upload"):
    print(args[0] + " output")
    sys.exit(cfg.get(args[0] + " exit", 0))
sys.exit(3)
'''


@pytest.fixture
def fake_cli(tmp_path, monkeypatch):
    """Install the stand-in as `arduino-cli` on PATH; returns (config dict, write(), log reader)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    config = tmp_path / "cli.json"
    log = tmp_path / "cli.log"
    exe = bindir / "arduino-cli"
    exe.write_text(FAKE_CLI.format(python=sys.executable, config=str(config), log=str(log)))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("ARDUINO_CLI", raising=False)
    state = {"version": VERSION_1X, "core list": CORES_1X, "lib list": LIBS_1X, "board list": BOARDS_1X}

    def write(**changes):
        state.update({k.replace("_", " "): v for k, v in changes.items()})
        config.write_text(json.dumps(state))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    write()
    return write, calls


@pytest.fixture
def sketches(tmp_path):
    """Copies of both sketches with an exported-looking src/ (flash only checks it exists)."""
    out = tmp_path / "sketches"
    for board in BOARDS:
        dst = out / board
        shutil.copytree(ROOT / "firmware/boards" / board, dst, ignore=shutil.ignore_patterns("src"))
        (dst / "src").mkdir()
        (dst / "src/model_data.cc").write_text("// exported\n")
    return out


def no_cli_path(monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("ARDUINO_CLI", raising=False)


# ---- dry run --------------------------------------------------------------------------------

@pytest.mark.parametrize("board,fqbn,options", [
    ("nano33ble", "arduino:mbed_nano:nano33ble", []),
    ("esp32cam", "esp32:esp32:esp32cam", ["--board-options", "PartitionScheme=huge_app"]),
])
def test_dry_run_prints_exact_commands(board, fqbn, options, capsys, monkeypatch, tmp_path):
    no_cli_path(monkeypatch, tmp_path)
    run = tmp_path / "run"
    rc = cli_main(["flash", str(run), "--board", board, "--port", "/dev/ttyX9", "--dry-run",
                   "--build-dir", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert rc == 0
    commands = [shlex.split(line) for line in out.splitlines() if not line.startswith("#")]
    sketch = str((run / "export" / board).resolve())  # where `export RUN` puts the sketch
    assert commands == [
        ["arduino-cli", "compile", "--fqbn", fqbn, *options, "--build-path", str(tmp_path / "b"),
         "--warnings", "default", sketch],
        ["arduino-cli", "upload", "--fqbn", fqbn, *options, "--port", "/dev/ttyX9",
         "--input-dir", str(tmp_path / "b"), sketch],
    ]
    assert "# note: arduino-cli not found" in out  # dry run still says what to install


def test_dry_run_without_port_and_compile_only(capsys, tmp_path):
    plan = plan_flash("esp32cam", tmp_path / "run/export/esp32cam")
    assert plan.commands[1][plan.commands[1].index("--port") + 1] == "<PORT>"
    # The build goes next to the sketch, never into the repository's firmware/ tree.
    assert plan.build_dir == (tmp_path / "run/export/build/esp32cam").resolve()
    rc = cli_main(["flash", str(tmp_path / "run"), "--board", "nano33ble", "--dry-run", "--compile-only"])
    out = capsys.readouterr().out
    assert rc == 0 and out.count("arduino-cli compile") == 1 and "upload" not in out
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_nothing_to_flash_without_run_or_sketch(capsys):
    rc = cli_main(["flash", "--board", "nano33ble", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: nothing to flash") and err.count("\n") == 1


def test_unknown_board_is_one_line_listing_the_boards(capsys, tmp_path):
    rc = cli_main(["flash", str(tmp_path), "--board", "uno", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert err.startswith("error: unknown board 'uno'") and "nano33ble, esp32cam" in err


def test_dry_run_with_run_dir_mentions_the_export(capsys, tmp_path):
    rc = cli_main(["flash", str(tmp_path), "--board", "esp32cam", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0 and f"facemask-edge export {tmp_path} --board esp32cam" in out


def test_run_dir_needs_a_sketch_named_after_the_board(capsys, tmp_path):
    rc = cli_main(["flash", str(tmp_path), "--board", "esp32cam", "--sketch", str(tmp_path / "mine")])
    assert rc == 1 and "must be a folder named esp32cam" in capsys.readouterr().err


def test_partition_scheme_leaves_room_for_models():
    """huge_app gives the ESP32-CAM's 3 MB app partition the board registry budgets for."""
    assert BOARDS["esp32cam"].board_options == ("PartitionScheme=huge_app",)
    assert BOARDS["esp32cam"].flash_bytes == 3 * 1024 * 1024


# ---- missing tools ---------------------------------------------------------------------------

def test_without_arduino_cli_says_how_to_install(capsys, monkeypatch, tmp_path, sketches):
    no_cli_path(monkeypatch, tmp_path)
    rc = cli_main(["flash", "--board", "nano33ble", "--sketch", str(sketches / "nano33ble")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: arduino-cli not found on PATH")
    assert "install.sh" in err and "scripts/setup_arduino.sh" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def converted_run(tmp_path_factory):
    """A converted run (tiny int8 model, 24 px RGB) that `export` accepts."""
    pytest.importorskip("tensorflow")  # converts the tiny model (a checked-in fixture can replace it)
    from facemask_edge.device.testing import make_tiny_run

    return make_tiny_run(tmp_path_factory.mktemp("flash") / "run")


def _files(*roots: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for root in roots for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("missing", ["arduino-cli", "core", "board"])
def test_flash_run_checks_tools_before_writing_anything(missing, converted_run, fake_cli, monkeypatch,
                                                        tmp_path, capsys):
    """Issue 11, behaviour 9: `flash RUN` used to export into the repository's firmware/boards/
    before finding out that arduino-cli is missing. Now arduino-cli, the core and the board are
    checked first, and a failure leaves the run folder and firmware/ exactly as they were."""
    write, calls = fake_cli
    if missing == "arduino-cli":
        no_cli_path(monkeypatch, tmp_path)
    elif missing == "core":
        write(core_list={"platforms": []})
    else:
        write(board_list={"detected_ports": []})
    before = _files(converted_run, ROOT / "firmware")
    rc = cli_main(["flash", str(converted_run), "--board", "nano33ble"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and err.count("\n") == 1
    assert {"arduino-cli": "arduino-cli not found", "core": "core arduino:mbed_nano",
            "board": "no nano33ble found"}[missing] in err
    assert _files(converted_run, ROOT / "firmware") == before
    assert not (converted_run / "export").exists()
    assert not any(c[0] in ("compile", "upload") for c in calls())


def test_flash_run_exports_into_the_run_then_builds_there(converted_run, fake_cli, tmp_path, capsys):
    """One export location: `flash RUN` exports to RUN/export/<board>/ like `export` and the
    pipeline, and builds in RUN/export/build/<board>; firmware/ is not written."""
    run = tmp_path / "run"
    shutil.copytree(converted_run, run)
    before = _files(ROOT / "firmware")
    _, calls = fake_cli
    rc = cli_main(["flash", str(run), "--board", "esp32cam"])
    assert rc == 0, capsys.readouterr().err
    sketch = run / "export" / "esp32cam"
    assert (sketch / "esp32cam.ino").is_file() and (sketch / "src/model_data.cc").is_file()
    builds = [c for c in calls() if c[0] in ("compile", "upload")]
    assert builds[0][-1] == str(sketch.resolve())
    assert builds[0][builds[0].index("--build-path") + 1] == str((run / "export/build/esp32cam").resolve())
    assert _files(ROOT / "firmware") == before


def test_missing_core_and_library(fake_cli, sketches):
    write, calls = fake_cli
    write(core_list={"platforms": []}, lib_list={"installed_libraries": [LIBS_1X["installed_libraries"][0]]})
    with pytest.raises(ToolMissing) as exc:
        flash("nano33ble", sketch=sketches / "nano33ble", port="/dev/ttyACM0", echo=lambda s: None)
    msg = str(exc.value)
    assert "arduino-cli core install arduino:mbed_nano" in msg
    assert 'arduino-cli lib install "Chirale_TensorFLowLite@2.0.0"' in msg
    assert "Arduino_OV767X" not in msg  # installed
    assert not any(c[0] in ("compile", "upload") for c in calls())


def test_old_esp32_core_is_refused_with_upgrade_command(fake_cli, sketches):
    write, _ = fake_cli
    write(core_list=CORES_0X)
    with pytest.raises(ToolMissing, match=r"esp32:esp32 >= 3\.0\.0, found 2\.0\.17.*core upgrade esp32:esp32 "
                                          r"--additional-urls https://espressif"):
        flash("esp32cam", sketch=sketches / "esp32cam", port="/dev/ttyUSB0", echo=lambda s: None)


def test_old_arduino_cli_is_refused(fake_cli, sketches):
    write, _ = fake_cli
    write(version={"VersionString": "0.31.0"})
    with pytest.raises(ToolMissing, match=r"0\.31\.0 is too old"):
        flash("nano33ble", sketch=sketches / "nano33ble", port="/dev/ttyACM0", echo=lambda s: None)


def test_sketch_without_export(fake_cli, tmp_path, capsys):
    sketch = tmp_path / "nano33ble"
    shutil.copytree(ROOT / "firmware/boards/nano33ble", sketch, ignore=shutil.ignore_patterns("src"))
    rc = cli_main(["flash", "--board", "nano33ble", "--sketch", str(sketch), "--port", "/dev/ttyACM0"])
    err = capsys.readouterr().err
    assert rc == 1 and "has no model yet" in err and "facemask-edge export" in err


# ---- board detection and the build ------------------------------------------------------------

def test_no_board_connected(fake_cli, sketches, capsys):
    write, calls = fake_cli
    write(board_list={"detected_ports": [BOARDS_1X["detected_ports"][2]]})
    rc = cli_main(["flash", "--board", "nano33ble", "--sketch", str(sketches / "nano33ble")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "no nano33ble found on USB (serial ports seen: /dev/ttyS0" in err
    assert "connect the board" in err and "--port" in err
    assert [c[0] for c in calls()] == ["version", "core", "lib", "board"]


def test_flash_nano_finds_port_compiles_and_uploads(fake_cli, sketches, capfd):
    _, calls = fake_cli
    plan = flash("nano33ble", sketch=sketches / "nano33ble", build_dir=sketches / "build")
    assert plan.port == "/dev/ttyACM0"
    builds = [c for c in calls() if c[0] in ("compile", "upload")]
    sketch = str((sketches / "nano33ble").resolve())
    assert builds == [
        ["compile", "--fqbn", "arduino:mbed_nano:nano33ble", "--build-path", str(sketches / "build"),
         "--warnings", "default", sketch],
        ["upload", "--fqbn", "arduino:mbed_nano:nano33ble", "--port", "/dev/ttyACM0",
         "--input-dir", str(sketches / "build"), sketch],
    ]
    out = capfd.readouterr()
    assert "compile output" in out.out and "upload output" in out.out


def test_flash_esp32cam_by_usb_bridge_id(fake_cli, sketches):
    """The ESP32-CAM has no USB of its own: its CH340 bridge (1A86:7523) identifies it."""
    _, calls = fake_cli
    plan = flash("esp32cam", sketch=sketches / "esp32cam", build_dir=sketches / "build", echo=lambda s: None)
    assert plan.port == "/dev/ttyUSB0"
    upload = [c for c in calls() if c[0] == "upload"][0]
    assert upload[upload.index("--board-options") + 1] == "PartitionScheme=huge_app"
    assert ["lib", "list"] not in [c[:2] for c in calls()]  # the core bundles TFLM and the camera


def test_upload_failure_is_a_device_error_with_hint(fake_cli, sketches):
    write, _ = fake_cli
    write(upload_exit=2)
    with pytest.raises(DeviceError, match="upload failed") as exc:
        flash("esp32cam", sketch=sketches / "esp32cam", port="/dev/ttyUSB0", echo=lambda s: None)
    assert "IO0" in exc.value.hint


def test_compile_only_needs_no_board(fake_cli, sketches):
    write, calls = fake_cli
    write(board_list={"detected_ports": []})
    flash("nano33ble", sketch=sketches / "nano33ble", compile_only=True, echo=lambda s: None)
    assert [c[0] for c in calls()][-1] == "compile" and ["board", "list"] not in [c[:2] for c in calls()]


def test_two_candidate_ports_need_a_choice(fake_cli, sketches):
    write, _ = fake_cli
    two = {"detected_ports": [BOARDS_1X["detected_ports"][0], BOARDS_0X[0]]}
    write(board_list=two)
    with pytest.raises(DeviceError, match="several possible nano33ble ports: /dev/ttyACM0, /dev/ttyACM1"):
        flash("nano33ble", sketch=sketches / "nano33ble", echo=lambda s: None)


# ---- parsers on recorded output -----------------------------------------------------------------

def test_parsers_accept_0x_and_1x_shapes():
    assert parse_core_list(json.dumps(CORES_1X)) == {"arduino:mbed_nano": "4.2.1", "esp32:esp32": "3.1.1"}
    assert parse_core_list(json.dumps(CORES_0X))["esp32:esp32"] == "2.0.17"
    assert parse_core_list('{"platforms": null}') == {}
    assert parse_lib_list(json.dumps(LIBS_1X))["chirale_tensorflowlite"] == ("Chirale_TensorFLowLite", "2.0.0")
    assert parse_lib_list(json.dumps(LIBS_0X)) == {"arduino_ov767x": ("Arduino_OV767X", "0.0.2")}
    ports = parse_board_list(json.dumps(BOARDS_1X))
    assert [(p.address, p.vid, p.pid) for p in ports] == [
        ("/dev/ttyACM0", 0x2341, 0x805A), ("/dev/ttyUSB0", 0x1A86, 0x7523), ("/dev/ttyS0", None, None)]
    assert ports[0].fqbns == ("arduino:mbed_nano:nano33ble",)
    assert parse_board_list(json.dumps(BOARDS_0X))[0].address == "/dev/ttyACM1"
    assert parse_version(json.dumps(VERSION_1X)) == (1, 1, 1)
    assert parse_version("arduino-cli  Version: 0.35.3 Commit: 95cfd654") == (0, 35, 3)
    assert parse_version('{"VersionString": "git-snapshot"}') is None


def test_find_port_and_check_toolchain_with_injected_runner():
    """The checks take the runner as a parameter (habit: pass the connected object in)."""
    answers = {"version": VERSION_1X, "core": CORES_1X, "lib": LIBS_1X, "board": BOARDS_1X}

    class Proc:
        def __init__(self, out):
            self.returncode, self.stdout, self.stderr = 0, json.dumps(out), ""

    def runner(cmd, **kw):
        return Proc(answers[cmd[1]])

    check_toolchain("nano33ble", "arduino-cli", runner)
    assert find_port(BOARDS["nano33ble"], "arduino-cli", runner) == "/dev/ttyACM0"
    assert find_port(BOARDS["esp32cam"], "arduino-cli", runner) == "/dev/ttyUSB0"


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")
def test_flash_with_run_dir_exports_then_builds(fake_cli, tmp_path, capsys):
    """End to end without hardware: a real int8 model exported into a fresh sketch, then built
    and uploaded through arduino-cli (the stand-in)."""
    from _fixtures import fixture_model
    from test_export import make_run

    run = make_run(tmp_path, fixture_model("flash_gray24"), ["with_mask", "without_mask"], "grayscale")
    sketch = tmp_path / "out" / "nano33ble"
    _, calls = fake_cli
    rc = cli_main(["flash", str(run), "--board", "nano33ble", "--sketch", str(sketch),
                   "--build-dir", str(tmp_path / "build")])
    assert rc == 0, capsys.readouterr().err
    assert (sketch / "nano33ble.ino").is_file() and (sketch / "src/model_ops.h").is_file()
    settings = (sketch / "src/model_settings.h").read_text()
    assert "#define FE_INPUT_GRAYSCALE 1" in settings
    builds = [c for c in calls() if c[0] in ("compile", "upload")]
    assert [c[0] for c in builds] == ["compile", "upload"]
    assert builds[0][-1] == str(sketch.resolve()) and "/dev/ttyACM0" in builds[1]
