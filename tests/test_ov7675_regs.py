"""The Nano sketch's OV7675 register table (firmware/boards/nano33ble/nano33ble_ov7675.h), built
with the host C compiler and run against a simulated sensor (firmware/host/ov7675_test.c): the
table decodes to the OV7675 QCIF window the public drivers use, touches nothing else, keeps the
bits it does not own, and names the register when the bus fails. Under a second."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"


@pytest.mark.skipif(shutil.which("cc") is None, reason="no host C compiler (cc)")
def test_ov7675_register_table_on_a_simulated_sensor(tmp_path):
    exe = tmp_path / "ov7675_test"
    build = subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
                            "-I", str(FIRMWARE / "boards" / "nano33ble"), str(FIRMWARE / "host" / "ov7675_test.c"),
                            "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert "all checks passed" in run.stdout


@pytest.mark.skipif(shutil.which("g++") is None, reason="no host C++ compiler (g++)")
def test_ov7675_header_is_clean_cxx(tmp_path):
    """The sketch includes the header from C++ (the .ino): no warning there either."""
    proc = subprocess.run(["g++", "-std=gnu++14", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only",
                           "-x", "c++", str(FIRMWARE / "boards" / "nano33ble" / "nano33ble_ov7675.h")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
