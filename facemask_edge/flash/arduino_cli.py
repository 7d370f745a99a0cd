"""Build and upload a board's sketch with arduino-cli.

``flash`` checks what a build needs before running it (arduino-cli itself, the board's core,
the libraries, an exported sketch, a connected board) and says how to fix what is missing, so
the user never has to read a compiler log to learn that a library is not installed. Parsing of
arduino-cli's JSON output is done by pure functions that accept both the 0.x and the 1.x shapes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from facemask_edge.errors import DeviceError, FacemaskError, ToolMissing
from facemask_edge.export.exporter import LIBRARIES
from facemask_edge.export.host import firmware_dir
from facemask_edge.profile.boards import Board, get_board

__all__ = [
    "Toolchain",
    "TOOLCHAINS",
    "ESP32_INDEX_URL",
    "INSTALL_HINT",
    "DetectedPort",
    "FlashPlan",
    "find_arduino_cli",
    "parse_version",
    "parse_core_list",
    "parse_lib_list",
    "parse_board_list",
    "plan_flash",
    "check_toolchain",
    "find_port",
    "flash",
]

ESP32_INDEX_URL = "https://espressif.github.io/arduino-esp32/package_esp32_index.json"
INSTALL_HINT = ("install arduino-cli (https://arduino.github.io/arduino-cli/latest/installation/, "
                "e.g. `curl -fsSL https://raw.githubusercontent.com/arduino/arduino-cli/master/install.sh"
                " | sh`), then run scripts/setup_arduino.sh; or set ARDUINO_CLI to its path")
# .cc files in a sketch are compiled from arduino-cli 0.34 on (arduino/arduino-cli#2273).
MIN_CLI = (0, 34, 0)


@dataclass(frozen=True)
class Toolchain:
    """What arduino-cli needs to build one board's sketch."""

    fqbn: str
    board_options: tuple[str, ...]
    core: str
    core_min: tuple[int, int, int]
    core_url: str | None
    libraries: tuple[tuple[str, str], ...]
    upload_note: str = ""


TOOLCHAINS: dict[str, Toolchain] = {
    "nano33ble": Toolchain(
        fqbn="arduino:mbed_nano:nano33ble", board_options=(), core="arduino:mbed_nano",
        core_min=(4, 0, 0), core_url=None, libraries=LIBRARIES["nano33ble"],
        upload_note="double-press the reset button if the upload does not find the board"),
    "esp32cam": Toolchain(
        # Huge APP: 3 MB for the program, room for the model array (the default gives 1.2 MB).
        fqbn="esp32:esp32:esp32cam", board_options=("PartitionScheme=huge_app",),
        core="esp32:esp32", core_min=(3, 0, 0), core_url=ESP32_INDEX_URL,
        libraries=LIBRARIES["esp32cam"],
        upload_note="boards without auto-reset: hold IO0 to GND while pressing reset, then upload"),
}


@dataclass(frozen=True)
class DetectedPort:
    """One serial port as ``arduino-cli board list`` reports it."""

    address: str
    protocol: str
    vid: int | None
    pid: int | None
    fqbns: tuple[str, ...] = ()
    label: str = ""


@dataclass
class FlashPlan:
    """The commands ``flash`` runs, in order."""

    board: str
    sketch: Path
    build_dir: Path
    port: str | None
    commands: list[list[str]] = field(default_factory=list)

    def shell(self) -> list[str]:
        return [shlex.join(cmd) for cmd in self.commands]


def find_arduino_cli(explicit: str | None = None) -> str:
    """Path of arduino-cli: ``explicit``, ``$ARDUINO_CLI`` or the PATH.

    Raises:
        ToolMissing: not installed, with how to install it.
    """
    name = explicit or os.environ.get("ARDUINO_CLI") or "arduino-cli"
    path = shutil.which(name)
    if path is None:
        where = "on PATH" if name == "arduino-cli" else f"at {name}"
        raise ToolMissing(f"arduino-cli not found {where}", INSTALL_HINT)
    return path


def parse_version(text: str) -> tuple[int, int, int] | None:
    """Version of ``arduino-cli version --format json`` output (or of a text like "Version: 0.35.3")."""
    try:
        data = json.loads(text)
        raw = str(data.get("VersionString") or data.get("version") or "") if isinstance(data, dict) else str(data)
    except ValueError:
        raw = text
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", raw)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _as_list(data, key: str) -> list:
    if isinstance(data, dict):
        data = data.get(key)
    return data if isinstance(data, list) else []


def parse_core_list(text: str) -> dict[str, str]:
    """``core list --format json`` -> {platform id: installed version} (0.x list or 1.x object)."""
    out = {}
    for p in _as_list(json.loads(text or "null"), "platforms"):
        pid = p.get("id") or p.get("ID")
        version = p.get("installed_version") or p.get("installed") or p.get("Installed") or ""
        if pid:
            out[str(pid)] = str(version)
    return out


def parse_lib_list(text: str) -> dict[str, tuple[str, str]]:
    """``lib list --format json`` -> {lower-case name: (name, version)}."""
    out = {}
    for item in _as_list(json.loads(text or "null"), "installed_libraries"):
        lib = item.get("library", item) if isinstance(item, dict) else {}
        name = lib.get("name") or lib.get("Name")
        if name:
            out[str(name).lower()] = (str(name), str(lib.get("version") or lib.get("Version") or ""))
    return out


def _hex(value) -> int | None:
    try:
        return int(str(value), 16)
    except (TypeError, ValueError):
        return None


def parse_board_list(text: str) -> list[DetectedPort]:
    """``board list --format json`` -> detected ports with USB ids and matching FQBNs."""
    ports = []
    for item in _as_list(json.loads(text or "null"), "detected_ports"):
        port = item.get("port", item)
        props = port.get("properties") or {}
        boards = item.get("matching_boards") or item.get("boards") or []
        ports.append(DetectedPort(
            address=str(port.get("address", "")), protocol=str(port.get("protocol", "serial")),
            vid=_hex(props.get("vid")), pid=_hex(props.get("pid")),
            fqbns=tuple(str(b.get("fqbn")) for b in boards if b.get("fqbn")),
            label=str(port.get("label") or port.get("protocol_label") or "")))
    return ports


Runner = Callable[..., subprocess.CompletedProcess]


def _run_json(runner: Runner, cli: str, *args: str) -> str:
    cmd = [cli, *args, "--format", "json"]
    proc = runner(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FacemaskError(f"`{shlex.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[:300]}",
                            "check the arduino-cli installation")
    return proc.stdout


def _version_text(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def check_toolchain(board: str, cli: str, runner: Runner = subprocess.run) -> None:
    """Check arduino-cli's version, the board's core and the sketch's libraries.

    Raises:
        ToolMissing: with the exact install commands for everything that is missing.
    """
    tc = TOOLCHAINS[board]
    version = parse_version(_run_json(runner, cli, "version"))
    if version is not None and version < MIN_CLI:
        raise ToolMissing(f"arduino-cli {_version_text(version)} is too old (need {_version_text(MIN_CLI)}+ "
                          "to compile the sketch's .cc files)", INSTALL_HINT)
    missing = []
    cores = parse_core_list(_run_json(runner, cli, "core", "list"))
    installed = cores.get(tc.core)
    urls = f" --additional-urls {tc.core_url}" if tc.core_url else ""
    if installed is None:
        missing.append(f"core {tc.core} (run: arduino-cli core update-index{urls} && "
                       f"arduino-cli core install {tc.core}{urls})")
    elif (parse_version(installed) or (0, 0, 0)) < tc.core_min:
        missing.append(f"core {tc.core} >= {_version_text(tc.core_min)}, found {installed} "
                       f"(run: arduino-cli core upgrade {tc.core}{urls})")
    libs = parse_lib_list(_run_json(runner, cli, "lib", "list")) if tc.libraries else {}
    for name, version in tc.libraries:
        if name.lower() not in libs:
            missing.append(f"library {name} (run: arduino-cli lib install \"{name}@{version}\")")
    if missing:
        raise ToolMissing("missing for " + board + ": " + "; ".join(missing),
                          "or run scripts/setup_arduino.sh")


def find_port(board: Board, cli: str, runner: Runner = subprocess.run) -> str:
    """The serial port of a connected ``board`` (by FQBN, then by USB VID/PID).

    Raises:
        DeviceError: none or several candidates, listing the ports seen.
    """
    ports = [p for p in parse_board_list(_run_json(runner, cli, "board", "list")) if p.protocol == "serial"]
    tc = TOOLCHAINS[board.name]
    by_fqbn = [p for p in ports if tc.fqbn in p.fqbns]
    by_usb = [p for p in ports if any(p.vid == vid and (pid is None or p.pid == pid)
                                      for vid, pid in board.usb_ids)]
    found = by_fqbn or by_usb
    seen = ", ".join(f"{p.address} ({p.label or 'unknown'})" for p in ports) or "none"
    if not found:
        raise DeviceError(f"no {board.name} found on USB (serial ports seen: {seen})",
                          "connect the board with a data USB cable, or pass --port")
    if len({p.address for p in found}) > 1:
        raise DeviceError(f"several possible {board.name} ports: {', '.join(p.address for p in found)}",
                          "pass --port")
    return found[0].address


def _sketch_dir(board: str, sketch: str | Path | None) -> Path:
    path = Path(sketch) if sketch else firmware_dir() / "boards" / board
    return path


def plan_flash(board: str, sketch: str | Path | None = None, port: str | None = None,
               build_dir: str | Path | None = None, cli: str = "arduino-cli",
               compile_only: bool = False) -> FlashPlan:
    """The compile and upload commands for ``board`` (nothing is run or checked)."""
    b = get_board(board)
    tc = TOOLCHAINS[b.name]
    sketch_path = _sketch_dir(b.name, sketch).resolve()
    build = Path(build_dir) if build_dir else firmware_dir().resolve() / "build" / b.name
    opts = ["--board-options", ",".join(tc.board_options)] if tc.board_options else []
    plan = FlashPlan(board=b.name, sketch=sketch_path, build_dir=build, port=port)
    plan.commands.append([cli, "compile", "--fqbn", tc.fqbn, *opts, "--build-path", str(build),
                          "--warnings", "default", str(sketch_path)])
    if not compile_only:
        plan.commands.append([cli, "upload", "--fqbn", tc.fqbn, *opts, "--port", port or "<PORT>",
                              "--input-dir", str(build), str(sketch_path)])
    return plan


def _check_sketch(plan: FlashPlan) -> None:
    ino = plan.sketch / f"{plan.sketch.name}.ino"
    if not ino.is_file():
        raise FacemaskError(f"no sketch {ino}", f"pass --sketch, or export one: facemask-edge export RUN --board {plan.board}")
    if not (plan.sketch / "src" / "model_data.cc").is_file():
        raise FacemaskError(f"the sketch {plan.sketch} has no model yet",
                            f"run `facemask-edge export RUN_DIR --board {plan.board}` first (or pass RUN_DIR to flash)")


def flash(board: str, *, sketch: str | Path | None = None, port: str | None = None,
          dry_run: bool = False, compile_only: bool = False, build_dir: str | Path | None = None,
          cli: str | None = None, runner: Runner = subprocess.run,
          echo: Callable[[str], None] = print) -> FlashPlan:
    """Compile and upload a board's exported sketch with arduino-cli.

    Args:
        board: ``nano33ble`` or ``esp32cam``.
        sketch: sketch folder (default ``firmware/boards/<board>``).
        port: serial port; found with ``arduino-cli board list`` when omitted.
        dry_run: print the commands and run nothing (no checks either).
        compile_only: build without uploading (no board needed).
        runner: ``subprocess.run`` or a stand-in with its signature.
        echo: where progress lines go.

    Returns:
        The plan that ran (or would run).
    """
    if dry_run:
        exe = cli or os.environ.get("ARDUINO_CLI") or "arduino-cli"
        plan = plan_flash(board, sketch, port, build_dir, exe, compile_only)
        for line in plan.shell():
            echo(line)
        if shutil.which(exe) is None:
            echo(f"# note: arduino-cli not found: {INSTALL_HINT}")
        if port is None and not compile_only:
            echo("# note: <PORT> is found with `arduino-cli board list` when --port is not given")
        return plan
    exe = find_arduino_cli(cli)
    b = get_board(board)
    plan = plan_flash(board, sketch, port, build_dir, exe, compile_only)
    _check_sketch(plan)
    check_toolchain(b.name, exe, runner)
    if not compile_only and plan.port is None:
        plan = plan_flash(board, sketch, find_port(b, exe, runner), build_dir, exe, compile_only)
    plan.build_dir.mkdir(parents=True, exist_ok=True)
    for cmd in plan.commands:
        echo("$ " + shlex.join(cmd))
        proc = runner(cmd)  # output goes straight to the terminal
        if proc.returncode != 0:
            step = cmd[1]
            hint = ("read the compiler messages above" if step == "compile"
                    else TOOLCHAINS[b.name].upload_note or "check the cable and the port")
            err = FacemaskError if step == "compile" else DeviceError
            raise err(f"arduino-cli {step} failed (exit {proc.returncode})", hint)
    return plan
