"""Build and upload a board's sketch with arduino-cli.

``flash`` checks everything a build needs before it does anything (arduino-cli itself, the
board's core, the libraries, a connected board), so a missing tool costs no export and leaves
no files behind, and it says how to fix what is missing, so the user never has to read a
compiler log to learn that a library is not installed. What a board needs (FQBN, board
options, core and its index URL, libraries, USB ids, upload note) is its entry in
:mod:`facemask_edge.boards`. Parsing of arduino-cli's JSON output is done by pure functions that
accept both the 0.x and the 1.x shapes.
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
from typing import Callable

from facemask_edge.boards import Board, get_board
from facemask_edge.errors import DeviceError, FacemaskError, ToolMissing

__all__ = [
    "INSTALL_HINT",
    "MIN_CLI",
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

INSTALL_HINT = ("install arduino-cli (https://arduino.github.io/arduino-cli/latest/installation/, "
                "e.g. `curl -fsSL https://raw.githubusercontent.com/arduino/arduino-cli/master/install.sh"
                " | sh`), then run scripts/setup_arduino.sh; or set ARDUINO_CLI to its path")
# .cc files in a sketch are compiled from arduino-cli 0.34 on (arduino/arduino-cli#2273).
MIN_CLI = (0, 34, 0)


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


def check_toolchain(board: str | Board, cli: str, runner: Runner = subprocess.run) -> None:
    """Check arduino-cli's version, the board's core and the sketch's libraries.

    Raises:
        ToolMissing: with the exact install commands for everything that is missing.
    """
    b = get_board(board)
    version = parse_version(_run_json(runner, cli, "version"))
    if version is not None and version < MIN_CLI:
        raise ToolMissing(f"arduino-cli {_version_text(version)} is too old (need {_version_text(MIN_CLI)}+ "
                          "to compile the sketch's .cc files)", INSTALL_HINT)
    missing = []
    cores = parse_core_list(_run_json(runner, cli, "core", "list"))
    installed = cores.get(b.core)
    urls = f" --additional-urls {b.core_url}" if b.core_url else ""
    if installed is None:
        missing.append(f"core {b.core} (run: arduino-cli core update-index{urls} && "
                       f"arduino-cli core install {b.core}{urls})")
    elif (parse_version(installed) or (0, 0, 0)) < b.core_min:
        missing.append(f"core {b.core} >= {_version_text(b.core_min)}, found {installed} "
                       f"(run: arduino-cli core upgrade {b.core}{urls})")
    libs = parse_lib_list(_run_json(runner, cli, "lib", "list")) if b.libraries else {}
    for name, version in b.libraries:
        if name.lower() not in libs:
            missing.append(f"library {name} (run: arduino-cli lib install \"{name}@{version}\")")
    if missing:
        raise ToolMissing("missing for " + b.name + ": " + "; ".join(missing),
                          "or run scripts/setup_arduino.sh")


def find_port(board: str | Board, cli: str, runner: Runner = subprocess.run) -> str:
    """The serial port of a connected ``board`` (by FQBN, then by USB VID/PID).

    Raises:
        DeviceError: none or several candidates, listing the ports seen.
    """
    b = get_board(board)
    ports = [p for p in parse_board_list(_run_json(runner, cli, "board", "list")) if p.protocol == "serial"]
    by_fqbn = [p for p in ports if b.fqbn in p.fqbns]
    by_usb = [p for p in ports if any(p.vid == vid and (pid is None or p.pid == pid)
                                      for vid, pid in b.usb_ids)]
    found = by_fqbn or by_usb
    seen = ", ".join(f"{p.address} ({p.label or 'unknown'})" for p in ports) or "none"
    if not found:
        raise DeviceError(f"no {b.name} found on USB (serial ports seen: {seen})",
                          "connect the board with a data USB cable, or pass --port")
    if len({p.address for p in found}) > 1:
        raise DeviceError(f"several possible {b.name} ports: {', '.join(p.address for p in found)}",
                          "pass --port")
    return found[0].address


def _sketch_path(board: Board, run_dir: str | Path | None, sketch: str | Path | None) -> Path:
    """The sketch to build: ``sketch``, else where ``export`` puts ``run_dir``'s sketch."""
    if run_dir is not None and sketch is not None and Path(sketch).name != board.name:
        raise FacemaskError(f"--sketch {sketch} must be a folder named {board.name} to export into",
                            f"use --sketch DIR/{board.name}, or export first and flash without RUN_DIR")
    if sketch is not None:
        return Path(sketch)
    if run_dir is None:
        raise FacemaskError("nothing to flash: give a run folder or an exported sketch",
                            f"facemask-edge flash RUN_DIR --board {board.name} (exports it first), "
                            f"or --sketch DIR/{board.name}")
    from facemask_edge.export import default_export_dir

    return default_export_dir(run_dir) / board.name


def plan_flash(board: str | Board, sketch: str | Path, port: str | None = None,
               build_dir: str | Path | None = None, cli: str = "arduino-cli",
               compile_only: bool = False) -> FlashPlan:
    """The compile and upload commands for ``board``'s ``sketch`` (nothing is run or checked).

    The build folder defaults to ``build/<board>`` next to the sketch (``RUN/export/build/<board>``
    for an exported run): outside the sketch, which arduino-cli requires, and never in the
    repository's ``firmware/`` tree.
    """
    b = get_board(board)
    sketch_path = Path(sketch).resolve()
    build = Path(build_dir) if build_dir else sketch_path.parent / "build" / b.name
    opts = ["--board-options", ",".join(b.board_options)] if b.board_options else []
    plan = FlashPlan(board=b.name, sketch=sketch_path, build_dir=build, port=port)
    plan.commands.append([cli, "compile", "--fqbn", b.fqbn, *opts, "--build-path", str(build),
                          "--warnings", "default", str(sketch_path)])
    if not compile_only:
        plan.commands.append([cli, "upload", "--fqbn", b.fqbn, *opts, "--port", port or "<PORT>",
                              "--input-dir", str(build), str(sketch_path)])
    return plan


def _check_sketch(plan: FlashPlan) -> None:
    ino = plan.sketch / f"{plan.sketch.name}.ino"
    if not ino.is_file():
        raise FacemaskError(f"no sketch {ino}", f"pass --sketch, or export one: facemask-edge export RUN --board {plan.board}")
    if not (plan.sketch / "src" / "model_data.cc").is_file():
        raise FacemaskError(f"the sketch {plan.sketch} has no model yet",
                            f"run `facemask-edge export RUN_DIR --board {plan.board}` first (or pass RUN_DIR to flash)")


def flash(board: str | Board, *, run_dir: str | Path | None = None, sketch: str | Path | None = None,
          port: str | None = None, dry_run: bool = False, compile_only: bool = False,
          build_dir: str | Path | None = None, cli: str | None = None,
          runner: Runner = subprocess.run, echo: Callable[[str], None] = print) -> FlashPlan:
    """Compile and upload a board's sketch with arduino-cli, exporting a run into it first.

    Order: arduino-cli, the core and the libraries, then the port (unless ``port`` or
    ``compile_only``), and only then the export of ``run_dir`` and the build. A missing tool
    or board therefore fails before any file is written.

    Args:
        board: a registered board name (or :class:`~facemask_edge.boards.Board`).
        run_dir: a converted run to export first (into ``sketch``, default ``RUN_DIR/export/<board>``).
        sketch: the sketch folder (named after the board); needed without ``run_dir``.
        port: serial port; found with ``arduino-cli board list`` when omitted.
        dry_run: print the commands and run nothing (no checks, no export).
        compile_only: build without uploading (no board needed).
        build_dir: arduino-cli build folder (default: ``build/<board>`` next to the sketch).
        cli: the arduino-cli executable (default: ``$ARDUINO_CLI`` or the PATH).
        runner: ``subprocess.run`` or a stand-in with its signature.
        echo: where progress lines go.

    Returns:
        The plan that ran (or would run).

    Raises:
        ToolMissing: arduino-cli, the core or a library is missing (nothing written).
        DeviceError: no board, several boards, or the upload failed.
        FacemaskError: no sketch, or the compile failed.
    """
    b = get_board(board)
    sketch_path = _sketch_path(b, run_dir, sketch)
    if dry_run:
        exe = cli or os.environ.get("ARDUINO_CLI") or "arduino-cli"
        if run_dir is not None:
            echo(f"# would first run: facemask-edge export {run_dir} --board {b.name}"
                 + (f" --out {Path(sketch).parent}" if sketch is not None else ""))
        plan = plan_flash(b, sketch_path, port, build_dir, exe, compile_only)
        for line in plan.shell():
            echo(line)
        if shutil.which(exe) is None:
            echo(f"# note: arduino-cli not found: {INSTALL_HINT}")
        if port is None and not compile_only:
            echo("# note: <PORT> is found with `arduino-cli board list` when --port is not given")
        return plan
    if run_dir is None:  # an already exported sketch: a look at it is cheaper than any tool
        _check_sketch(plan_flash(b, sketch_path, port, build_dir, compile_only=compile_only))
    exe = find_arduino_cli(cli)
    check_toolchain(b, exe, runner)
    if not compile_only and port is None:
        port = find_port(b, exe, runner)
    if run_dir is not None:
        from facemask_edge.export import export_run

        res = export_run(run_dir, b.name, out=sketch_path.parent)
        echo(f"exported {run_dir} into {res.path} ({len(res.files)} files written)")
    plan = plan_flash(b, sketch_path, port, build_dir, exe, compile_only)
    _check_sketch(plan)
    plan.build_dir.mkdir(parents=True, exist_ok=True)
    for cmd in plan.commands:
        echo("$ " + shlex.join(cmd))
        proc = runner(cmd)  # output goes straight to the terminal
        if proc.returncode != 0:
            step = cmd[1]
            hint = ("read the compiler messages above" if step == "compile"
                    else b.upload_note or "check the cable and the port")
            err = FacemaskError if step == "compile" else DeviceError
            raise err(f"arduino-cli {step} failed (exit {proc.returncode})", hint)
    return plan
