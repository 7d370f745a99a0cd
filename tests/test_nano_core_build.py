"""The Nano sketch, exported for a real model, compiles with the pinned Arduino mbed_nano core and
libraries (../shared/third_party) under the core's own platform.txt recipe with -Wall -Wextra:
no warning from the project's files, and flash/RAM within the Nano's 983,040 / 262,144 bytes.

Compiling the core and the libraries takes minutes the first time; they are cached by content.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facemask_edge.emulate.arduino_core import FLASH_BYTES, RAM_BYTES

THIRD_PARTY = Path(__file__).resolve().parents[2] / "shared" / "third_party"

pytestmark = [
    pytest.mark.emulator,
    pytest.mark.skipif(not (THIRD_PARTY / "ArduinoCore-mbed-4.6.0-nano33ble").is_dir(),
                       reason=f"{THIRD_PARTY} absent (pinned Arduino core and libraries)"),
    pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None, reason="arm-none-eabi-g++ not installed"),
]


def test_nano_sketch_builds_with_the_real_core_warning_free(tmp_path):
    from facemask_edge.device.testing import make_tiny_model, make_tiny_run
    from facemask_edge.emulate.arduino_core import compile_nano_sketch
    from facemask_edge.export import export_run

    run = make_tiny_run(tmp_path / "run", model=make_tiny_model(size=24))
    sketch = export_run(run, "nano33ble", out=tmp_path / "export").path
    b = compile_nano_sketch(sketch, THIRD_PARTY, tmp_path / "build")
    print(b.summary())
    assert b.project_warnings == []
    assert b.elf.is_file() and b.objects > 200
    # Model, TFLM, camera driver and core: tens of KB of flash at least; the static frame buffer
    # (50,688 B) and the arena are in RAM.
    assert 100_000 < b.flash_bytes <= FLASH_BYTES
    assert 50_688 < b.ram_bytes <= RAM_BYTES
