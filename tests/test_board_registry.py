"""The board registry: one entry per board, and a third board added in one place works in
`profile`, `export`, `flash --dry-run` and `board-sim` (issue 11, acceptance 3)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from facemask_edge import boards
from facemask_edge.boards import BOARDS, Board, get_board, model_defaults, register_board, usb_kind
from facemask_edge.cli import main as cli_main
from facemask_edge.errors import FacemaskError

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pytest.importorskip("tensorflow")  # converts the tiny model (a checked-in fixture can replace it)
    from facemask_edge.device.testing import make_tiny_run

    return make_tiny_run(tmp_path_factory.mktemp("registry") / "run")


@pytest.fixture
def third_board(tmp_path):
    """An Arducam Pico4ML (RP2040) registered in one place: its registry entry, whose sketch
    folder is a copy of the Nano's sketch named after it."""
    sketch = tmp_path / "sketches" / "pico4ml"
    shutil.copytree(ROOT / "firmware/boards/nano33ble", sketch, ignore=shutil.ignore_patterns("src", "build"))
    (sketch / "nano33ble.ino").rename(sketch / "pico4ml.ino")
    board = register_board(Board(
        name="pico4ml", title="Arducam Pico4ML (RP2040, Cortex-M0+ 133 MHz)", mcu="RP2040 (Arm Cortex-M0+)",
        clock_hz=133_000_000, ram_bytes=264 * 1024, psram_bytes=0, flash_bytes=2 * 1024 * 1024,
        reserved_ram_bytes=48 * 1024, reserved_flash_bytes=350 * 1024, frame=(96, 96, 1),
        frame_in_psram=False, cycles_per_mac=(20.0, 30.0), cycles_source="test figure",
        fqbn="rp2040:rp2040:arducam_pico4ml", board_options=("freq=133",), core="rp2040:rp2040",
        core_min=(3, 0, 0), core_url="https://example.invalid/package_rp2040_index.json",
        arduino_arch="rp2040", libraries=(("Chirale_TensorFLowLite", "2.0.0"),),
        usb_ids=((0x2E8A, 0x000A),), ei_device="raspberry-pi-rp2040", latency_budget_ms=400.0,
        reference_limits={"arena": 0.5}, sketch=sketch))
    yield board
    BOARDS.pop(board.name, None)


def test_profile_accepts_the_third_board(third_board, run, capsys):
    rc = cli_main(["profile", str(run), "--board", "pico4ml"])
    assert rc == 0, capsys.readouterr().err
    p = json.loads((run / "profile_pico4ml.json").read_text())
    assert (p["board"], p["clock_hz"], p["ram_bytes"], p["frame_buffer_bytes"]) == \
        ("pico4ml", 133_000_000, 264 * 1024, 96 * 96)
    assert p["ram_left_bytes"] == third_board.arena_ram_bytes - p["arena_with_margin_bytes"]
    assert "pico4ml: 20.0-30.0 cycles/MAC at 133 MHz" in capsys.readouterr().out


def test_export_accepts_the_third_board(third_board, run, tmp_path, capsys):
    target = tmp_path / "r"
    shutil.copytree(run, target)
    rc = cli_main(["export", str(target), "--board", "pico4ml"])
    assert rc == 0, capsys.readouterr().err
    sketch = target / "export" / "pico4ml"
    assert (sketch / "pico4ml.ino").read_bytes() == (third_board.sketch / "pico4ml.ino").read_bytes()
    settings = (sketch / "src/model_settings.h").read_text()
    assert '#define FE_BOARD "pico4ml"' in settings and "Arducam Pico4ML" in settings
    assert f"#define FE_BOARD_RAM_BYTES {264 * 1024}u" in settings
    rc = cli_main(["export", str(target), "--board", "pico4ml", "--format", "arduino-library"])
    import zipfile

    with zipfile.ZipFile(target / "export/FacemaskEdge_pico4ml.zip") as zf:
        props = zf.read("FacemaskEdge_pico4ml/library.properties").decode()
    assert rc == 0 and "architectures=rp2040\n" in props
    assert "depends=Chirale_TensorFLowLite (=2.0.0)" in props


def test_flash_dry_run_accepts_the_third_board(third_board, run, tmp_path, capsys):
    rc = cli_main(["flash", str(run), "--board", "pico4ml", "--port", "/dev/ttyACM7", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    commands = [shlex.split(line) for line in out.splitlines() if not line.startswith("#")]
    opts = ["--fqbn", "rp2040:rp2040:arducam_pico4ml", "--board-options", "freq=133"]
    assert commands[0][1:6] == ["compile", *opts]
    assert commands[1][1:6] == ["upload", *opts] and commands[1][-1] == str((run / "export/pico4ml").resolve())
    assert not (run / "export").exists()


def test_flash_checks_the_third_boards_core_and_finds_it_by_usb_id(third_board):
    from facemask_edge.errors import ToolMissing
    from facemask_edge.flash.arduino_cli import check_toolchain, find_port

    answers = {"version": {"VersionString": "1.1.1"},
               "core": {"platforms": [{"id": "arduino:mbed_nano", "installed_version": "4.2.1"}]},
               "lib": {"installed_libraries": []},
               "board": {"detected_ports": [{"port": {"address": "/dev/ttyACM3", "protocol": "serial",
                                                      "properties": {"vid": "0x2E8A", "pid": "0x000A"}}}]}}

    def runner(cmd, **kw):
        return SimpleNamespace(returncode=0, stdout=json.dumps(answers[cmd[1]]), stderr="")

    with pytest.raises(ToolMissing) as err:
        check_toolchain("pico4ml", "arduino-cli", runner)
    assert "core install rp2040:rp2040 --additional-urls https://example.invalid/" in str(err.value)
    assert 'lib install "Chirale_TensorFLowLite@2.0.0"' in str(err.value)
    assert find_port("pico4ml", "arduino-cli", runner) == "/dev/ttyACM3"


def test_board_sim_accepts_the_third_board(third_board, run, tmp_path):
    """In this process (the registration lives here): the simulated board answers as pico4ml
    with the free RAM its entry leaves."""
    from facemask_edge.device.session import BoardSession
    from facemask_edge.device.sim import board_budget
    from facemask_edge.device.transport import open_port

    link = tmp_path / "pico"
    seen: dict = {}

    def client():
        try:
            deadline = time.monotonic() + 60
            while not link.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            session = BoardSession(open_port(str(link), timeout=0.02), timeout=5)
            seen["info"] = session.handshake()
            session.close()
        except Exception as exc:  # reported by the assertion below
            seen["error"] = exc
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # board-sim stops on SIGTERM

    old = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=client, daemon=True)
    t.start()
    try:
        rc = cli_main(["board-sim", str(run), "--board", "pico4ml", "--link", str(link),
                       "--camera-every", "0", "--duration", "60"])
    finally:
        signal.signal(signal.SIGTERM, old)
        t.join(10)
    assert rc == 0 and "error" not in seen, seen.get("error")
    info = seen["info"]
    card = json.loads((run / "model_card.json").read_text())
    assert info.board == "pico4ml"
    assert info.free_ram_bytes == board_budget(third_board, uart=False) - card["arena_bytes"]


def test_the_third_board_is_everywhere_else_too(third_board):
    from facemask_edge.device.transport import list_candidates
    from facemask_edge.sweep import default_latency_budgets, default_reference_limits

    ports = [SimpleNamespace(device="/dev/ttyACM3", vid=0x2E8A, pid=0x000A, description="Pico4ML")]
    assert [c.kind for c in list_candidates(ports)] == ["pico4ml"]
    assert default_latency_budgets()["pico4ml"] == 400.0
    assert default_reference_limits()["pico4ml"] == {"arena": 0.5}
    assert model_defaults("pico4ml") == {}  # no sweep has written defaults for it
    with pytest.raises(FacemaskError) as err:
        get_board("uno")
    assert err.value.hint == "use one of nano33ble, esp32cam, pico4ml"


def test_unknown_board_is_one_line_listing_the_boards(capsys, tmp_path):
    for argv in (["profile", str(tmp_path), "--board", "uno"], ["export", str(tmp_path), "-b", "uno"],
                 ["board-sim", str(tmp_path), "--board", "uno"]):
        rc = cli_main(argv)
        err = capsys.readouterr().err
        assert rc == 1 and err == "error: unknown board 'uno' (use one of nano33ble, esp32cam)\n", argv


def test_registration_is_checked():
    nano = BOARDS["nano33ble"]
    with pytest.raises(FacemaskError, match="already registered"):
        register_board(nano)
    with pytest.raises(FacemaskError, match="not a plain name"):
        register_board(dataclasses.replace(nano, name="../x"))
    assert register_board(nano, replace=True) is nano


def test_registry_entries_agree_with_what_used_to_be_separate_tables():
    """The facts that lived in nine places, now fields of one entry (spot checks with sources)."""
    nano, esp = BOARDS["nano33ble"], BOARDS["esp32cam"]
    assert (nano.fqbn, nano.core, nano.arduino_arch, nano.ei_device) == \
        ("arduino:mbed_nano:nano33ble", "arduino:mbed_nano", "mbed_nano", "arduino-nano-33-ble")
    assert (esp.fqbn, esp.core_url, esp.arduino_arch, esp.libraries) == \
        ("esp32:esp32:esp32cam", boards.ESP32_INDEX_URL, "esp32", ())
    assert usb_kind(0x1A86, 0x7523) == "esp32cam" and usb_kind(0x2341, 0x1234) == "nano33ble"
    assert usb_kind(0x0403, 0x6001) is None
    assert nano.arena_ram_bytes == 256 * 1024 - 64 * 1024 - 176 * 144 * 2
    assert esp.arena_ram_bytes == 320 * 1024 - 96 * 1024  # the frame lives in PSRAM
    assert model_defaults("esp32cam")["train"]["size"] == 64  # defaults.json, read here only


def test_the_registry_is_a_leaf():
    """boards.py and paths.py import nothing from the toolkit but its errors."""
    import ast

    for name in ("boards.py", "paths.py"):
        tree = ast.parse((ROOT / "facemask_edge" / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
            {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert {m for m in imported if m and m.startswith("facemask_edge")} == {"facemask_edge.errors"}, name
