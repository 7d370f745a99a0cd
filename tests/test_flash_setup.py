"""The users' side of building firmware: scripts/setup_arduino.sh and the compile-sketches
workflow (firmware/ci/compile-sketches.yml). Neither can reach the internet here; what they would
run is checked against the same toolchain table `flash` uses."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facemask_edge.boards import BOARDS, ESP32_INDEX_URL

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup_arduino.sh"
WORKFLOW = ROOT / "firmware" / "ci" / "compile-sketches.yml"

# Inputs of arduino/compile-sketches@v1 (its action.yml).
COMPILE_SKETCHES_INPUTS = {"cli-version", "fqbn", "libraries", "platforms", "sketch-paths",
                           "cli-compile-flags", "verbose", "sketches-report-path", "github-token",
                           "enable-deltas-report", "enable-warnings-report"}


def logging_cli(tmp_path: Path) -> tuple[Path, Path]:
    """An `arduino-cli` that records its arguments and succeeds."""
    log = tmp_path / "calls.jsonl"
    exe = tmp_path / "arduino-cli"
    exe.write_text(f"#!{sys.executable}\nimport json, sys\n"
                   f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe, log


def run_setup(tmp_path, *args, env_extra=None):
    exe, log = logging_cli(tmp_path)
    env = dict(os.environ, ARDUINO_CLI=str(exe), **(env_extra or {}))
    proc = subprocess.run(["bash", str(SETUP), *args], capture_output=True, text=True, env=env)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def test_setup_installs_what_flash_checks(tmp_path):
    proc, calls = run_setup(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ["core", "update-index", "--additional-urls", ESP32_INDEX_URL] in calls
    assert ["core", "install", BOARDS["nano33ble"].core] in calls
    assert ["core", "install", BOARDS["esp32cam"].core, "--additional-urls", ESP32_INDEX_URL] in calls
    installed = [c[2] for c in calls if c[:2] == ["lib", "install"]]
    assert sorted(installed) == sorted(f"{name}@{version}" for name, version in BOARDS["nano33ble"].libraries)
    assert calls[-2:] == [["core", "list"], ["lib", "list"]]


def test_setup_one_board_and_pinned_core(tmp_path):
    proc, calls = run_setup(tmp_path, "esp32cam", env_extra={"ESP32_VERSION": "3.1.1"})
    assert proc.returncode == 0, proc.stderr
    assert ["core", "install", "esp32:esp32@3.1.1", "--additional-urls", ESP32_INDEX_URL] in calls
    assert not any(c[:2] == ["lib", "install"] for c in calls)


def test_setup_rejects_unknown_board_and_missing_cli(tmp_path):
    proc, _ = run_setup(tmp_path, "uno")
    assert proc.returncode == 2 and "unknown board 'uno'" in proc.stderr
    env = dict(os.environ, ARDUINO_CLI=str(tmp_path / "nope"))
    proc = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "install.sh" in proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_setup_passes_shellcheck():
    proc = subprocess.run(["shellcheck", str(SETUP)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def load_workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True)  # YAML 1.1 reads the key `on` as a boolean
    return data


def test_workflow_is_valid_for_compile_sketches():
    wf = load_workflow()
    assert {"push", "pull_request", "workflow_dispatch"} <= set(wf["on"])
    job = wf["jobs"]["compile"]
    entries = {e["board"]: e for e in job["strategy"]["matrix"]["include"]}
    assert set(entries) == set(BOARDS)
    steps = job["steps"]
    compile_step = next(s for s in steps if s.get("uses", "").startswith("arduino/compile-sketches@"))
    assert compile_step["uses"] == "arduino/compile-sketches@v1"
    assert set(compile_step["with"]) <= COMPILE_SKETCHES_INPUTS
    # The sketch export writes by default (RUN_DIR/export/<board>), not the checkout's firmware/.
    assert yaml.safe_load(compile_step["with"]["sketch-paths"]) == ["${{ env.RUN_DIR }}/export/${{ matrix.board }}"]
    for board, entry in entries.items():
        tc = BOARDS[board]
        options = ":" + ",".join(tc.board_options) if tc.board_options else ""
        assert entry["fqbn"] == tc.fqbn + options
        platforms = yaml.safe_load(entry["platforms"])
        assert platforms[0]["name"] == tc.core
        assert platforms[0].get("source-url") == tc.core_url
        libraries = yaml.safe_load(entry["libraries"])
        assert isinstance(libraries, list)  # an empty list, not the default "- source-path: ./"
        assert sorted((lib["name"], str(lib["version"])) for lib in libraries) == sorted(tc.libraries)
        assert (ROOT / "firmware/boards" / board / f"{board}.ino").is_file()
    # The export step runs before the compile, with options the CLI has.
    export = next(s for s in steps if "facemask-edge export" in s.get("run", ""))
    assert steps.index(export) < steps.index(compile_step)
    assert '"$RUN_DIR" --board ${{ matrix.board }}' in export["run"]
    for step in steps:
        assert ("uses" in step) != ("run" in step)


def test_workflow_matches_the_github_workflow_schema():
    """Against the JSON schema of GitHub workflows vendored by check-jsonschema (when installed)."""
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    if not Path(exe).exists():
        pytest.skip("check-jsonschema not installed")
    proc = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
