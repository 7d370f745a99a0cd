"""When the emulated Cortex-M4 can run here: QEMU, the ARM toolchain and a TFLM tree.

Shared by the emulator tests (tests/test_emulate.py) and the pipeline's measured-latency test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from facemask_edge.emulate.build import find_tflm

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

__all__ = ["ROOT", "SHARED", "tflm_tree", "skip_reason", "needs_emulator"]


def tflm_tree():
    """``$FACEMASK_EDGE_TFLM`` or ../shared/third_party's Chirale_TensorFlowLite, or None."""
    try:
        return find_tflm(os.environ.get("FACEMASK_EDGE_TFLM") or next(
            iter(sorted((SHARED / "third_party").glob("Chirale_TensorFlowLite-*"))), None))
    except Exception:
        return None


def skip_reason() -> str | None:
    if shutil.which("qemu-system-arm") is None:
        return "qemu-system-arm not installed (apt-get install qemu-system-arm)"
    if shutil.which("arm-none-eabi-g++") is None:
        return "arm-none-eabi-g++ not installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi " \
               "libstdc++-arm-none-eabi-newlib)"
    if tflm_tree() is None:
        return f"no TFLM tree: {SHARED / 'third_party'} absent and FACEMASK_EDGE_TFLM not set"
    return None


needs_emulator = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
