#!/usr/bin/env python3
"""Compile the Nano 33 BLE sketch for a run with the real Arduino mbed_nano core and libraries.

    python scripts/compile_nano_sketch.py RUN_DIR [--third-party ../shared/third_party] [--out DIR]

Exports RUN_DIR for nano33ble, replays the core's platform.txt recipe (-Wall -Wextra) on the
sketch, its src/, Chirale_TensorFlowLite, Arduino_OV767X, Wire and the core, links with the Mbed OS
symbols left unresolved (no libmbed.a in the pinned copy) and prints flash and RAM against the
Nano's 983,040 / 262,144 bytes. Exits 1 when the project's own files have warnings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from facemask_edge.emulate.arduino_core import compile_nano_sketch
    from facemask_edge.errors import FacemaskError
    from facemask_edge.export import export_run

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--third-party", type=Path, default=ROOT.parent / "shared" / "third_party")
    ap.add_argument("--out", type=Path, default=None, help="build folder (default: a temporary one)")
    args = ap.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = args.out or Path(tmp)
            sketch = export_run(args.run_dir, "nano33ble", out=out / "export").path
            b = compile_nano_sketch(sketch, args.third_party, out / "build", log=print)
            for w in b.project_warnings:
                print(w)
            print(b.summary())
            return 1 if b.project_warnings else 0
    except FacemaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
