"""The real firmware on an emulated Cortex-M4: build it for QEMU, run it, measure it.

``board-sim`` runs the firmware's protocol code with tflite-micro on the host; this package runs
the firmware that goes on the Nano (``firmware/common`` + the exported model + TFLM with CMSIS-NN,
``arm-none-eabi-gcc -Os``) under ``qemu-system-arm -M mps2-an386``, with its UART on a pty that
``validate --port`` uses unchanged. With ``-icount shift=0`` the board counts its instructions
exactly, so latency is measured (instructions per inference and per operator) instead of guessed
from MACs.

    fw = build_for_run(run_dir)                   # export + TFLM (cached) + link
    with Emulator(fw.elf, log) as emu: ...        # emu.port: /dev/pts/N
    m = measure_run(run_dir)                      # boot measurements -> RUN_DIR/emulate/measure.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from facemask_edge.emulate.build import FirmwareImage, build_firmware, build_tflm, find_tflm
from facemask_edge.emulate.measure import CPI_NOTE, CPI_RANGE, count_to_ms, latency_figures
from facemask_edge.emulate.qemu import BootReport, Emulator, parse_log
from facemask_edge.errors import DeviceError

__all__ = ["model_run", "attach_measurement", "EMULATED_BOARDS", "Prepared", "build_for_run", "layer_table", "measurement", "measure_run",
           "read_measurement", "Emulator", "BootReport", "parse_log", "build_tflm", "find_tflm",
           "CPI_RANGE", "CPI_NOTE", "count_to_ms", "latency_figures", "MEASURE_FILE"]

# Boards whose firmware runs on the emulated Cortex-M4 (the ESP32's Xtensa has no such model).
EMULATED_BOARDS = ("nano33ble",)
MEASURE_FILE = "measure.json"


@dataclass(frozen=True)
class Prepared:
    """A firmware image for one run, ready to start."""

    run_dir: Path
    board: str
    work: Path  # RUN_DIR/emulate
    firmware: FirmwareImage
    sha256: str

    @property
    def log(self) -> Path:
        return self.work / "uart1.log"


def build_for_run(run_dir: str | Path, board: str = "nano33ble", tflm: str | Path | None = None,
                  work: str | Path | None = None, log=None) -> Prepared:
    """Export the run for ``board`` and link the emulator firmware with it.

    Raises:
        FacemaskError: the board cannot be emulated, the export refuses the model (budget, ops),
            or a compiler step fails. ToolMissing: no arm-none-eabi-gcc or TFLM sources.
    """
    from facemask_edge.export import export_run

    if board not in EMULATED_BOARDS:
        raise DeviceError(f"board {board} cannot be emulated (only {', '.join(EMULATED_BOARDS)}: Cortex-M4)",
                          "use board-sim for the ESP32-CAM")
    run = Path(run_dir)
    work = Path(work) if work else run / "emulate"
    exported = export_run(run, board, out=work / "export")
    fw = build_firmware(exported.path / "src", work / "build", tflm=tflm, log=log)
    return Prepared(run, board, work, fw, exported.sha256)


def layer_table(model: bytes, ops: list[tuple[str, int]]) -> list[dict]:
    """Join the board's per-operator instruction counts with the model's operators (same order).

    Returns:
        One row per operator: index, op, output shape, MACs, instructions, instructions/MAC.
    """
    from facemask_edge.artifacts.tflite import read_tflite

    info = read_tflite(model)
    rows = []
    for i, (tag, count) in enumerate(ops):
        op = info.operators[i] if i < len(info.operators) else None
        shape = list(info.tensors[op.outputs[0]].shape) if op is not None and op.outputs else []
        macs = int(op.macs) if op is not None else 0
        rows.append({"index": i, "op": op.name if op is not None else tag, "board_tag": tag, "shape": shape,
                     "macs": macs, "instructions": int(count),
                     "instructions_per_mac": round(count / macs, 2) if macs else None})
    return rows


def measurement(prep: Prepared, boot: BootReport, model: bytes) -> dict:
    """What one boot measured, in the form ``measure.json`` and ``profile --measure`` use."""
    from facemask_edge.boards import get_board

    b = get_board(prep.board)
    layers = layer_table(model, boot.ops)
    macs = sum(r["macs"] for r in layers)
    fw = prep.firmware
    out = {
        "schema": 1,
        "model_sha256": prep.sha256,
        "board": b.name,
        "target": "qemu-system-arm -M mps2-an386 (Cortex-M4F), -icount shift=0: 1 instruction = 1 virtual ns",
        "build": {"compiler_flags": "arm-none-eabi-gcc -Os -mcpu=cortex-m4 -mthumb -mfloat-abi=softfp "
                                    "-mfpu=fpv4-sp-d16 (the Arduino mbed_nano core's)",
                  "tflm": str(fw.tflm.src), "tflm_key": fw.tflm.key, "tflm_objects": fw.tflm.objects,
                  "tflm_first_build_s": round(fw.tflm.build_seconds, 1),
                  "firmware_text_bytes": fw.text_bytes, "firmware_data_bytes": fw.data_bytes,
                  "firmware_bss_bytes": fw.bss_bytes},
        "arena_used_bytes": boot.arena_used,
        "free_ram_bytes": boot.free_ram,
        "counter": "instructions",
        "invoke_instructions": boot.invoke,
        "preprocess_instructions": boot.preprocess,
        "preprocess_frame": boot.frame,
        "macs": macs,
        "instructions_per_mac": round(boot.invoke / macs, 3) if boot.invoke and macs else None,
        "clock_hz": b.clock_hz,
        "cpi_range": list(CPI_RANGE),
        "cpi_note": CPI_NOTE,
        "invoke_ms": list(count_to_ms(boot.invoke or 0, "instructions", b.clock_hz)),
        "preprocess_ms": list(count_to_ms(boot.preprocess or 0, "instructions", b.clock_hz)),
        "layers": layers,
    }
    return out


def measure_run(run_dir: str | Path, board: str = "nano33ble", tflm: str | Path | None = None,
                log=None, timeout: float = 300.0) -> dict:
    """Build, boot once, and record what the board measured in ``RUN_DIR/emulate/measure.json``."""
    prep = build_for_run(run_dir, board, tflm=tflm, log=log)
    emu = Emulator(prep.firmware.elf, prep.log)
    try:
        emu.start(timeout=timeout)
        boot = emu.boot_report()
    finally:
        emu.stop()
    return write_measurement(prep, boot)


def write_measurement(prep: Prepared, boot: BootReport) -> dict:
    """Check the boot went well and write ``measure.json`` into the run's emulate folder."""
    if boot.status != 0 or boot.invoke is None:
        raise DeviceError(f"the emulated board could not run the model (status {boot.status})",
                          f"see {prep.log}")
    model = (prep.run_dir / "model_int8.tflite").read_bytes()
    m = measurement(prep, boot, model)
    (prep.work / MEASURE_FILE).write_text(json.dumps(m, indent=1) + "\n")
    return m


def read_measurement(run_dir: str | Path, sha256: str | None = None) -> dict | None:
    """The recorded measurement of a run, or None (none, or it was for another model)."""
    p = Path(run_dir) / "emulate" / MEASURE_FILE
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text())
    except ValueError:
        return None
    if sha256 and m.get("model_sha256") != sha256:
        return None
    return m


def layer_markdown(m: dict) -> str:
    """The per-layer table of a measurement, as Markdown."""
    rows = ["| # | op | output shape | MACs | instructions | instr./MAC |", "|---|---|---|---|---|---|"]
    for r in m["layers"]:
        per = f"{r['instructions_per_mac']:.2f}" if r["instructions_per_mac"] is not None else "-"
        rows.append(f"| {r['index']} | {r['op']} | {'x'.join(map(str, r['shape']))} | {r['macs']:,} | "
                    f"{r['instructions']:,} | {per} |")
    total = sum(r["instructions"] for r in m["layers"])
    rows.append(f"| | **total** | | {m['macs']:,} | {total:,} | "
                f"{(total / m['macs']) if m['macs'] else 0:.2f} |")
    return "\n".join(rows)


def summary_lines(m: dict) -> list[str]:
    """A few lines: instructions, time range at the board's clock, preprocessing."""
    lo, hi = m["invoke_ms"]
    plo, phi = m["preprocess_ms"]
    return [
        f"inference: {m['invoke_instructions'] / 1e6:.3f} M instructions ({m['instructions_per_mac']} per MAC, "
        f"{m['macs'] / 1e6:.2f} M MACs) = {lo:.1f}-{hi:.1f} ms on {m['board']} at {m['clock_hz'] / 1e6:.0f} MHz "
        f"({m['cpi_range'][0]}-{m['cpi_range'][1]} cycles/instruction)",
        f"preprocessing ({m['preprocess_frame']} frame): {m['preprocess_instructions'] / 1e6:.3f} M instructions "
        f"= {plo:.1f}-{phi:.1f} ms",
        f"arena used {m['arena_used_bytes']:,} bytes, RAM left {m['free_ram_bytes']:,} bytes (of the Nano's 256 KB)",
    ]


def model_run(tflite: str | Path, out_dir: str | Path, labels: list[str] | None = None) -> Path:
    """A run folder for a bare int8 ``.tflite`` (e.g. the MLPerf Tiny VWW reference), so that it can
    be exported, emulated and validated like a trained run.

    The model card is derived from the flatbuffer: square int8 input (RGB or grayscale), one int8
    output; labels default to ``class0..classN-1``.
    """
    import hashlib

    from facemask_edge.artifacts.tflite import read_tflite

    data = Path(tflite).read_bytes()
    info = read_tflite(data)
    inp, out = info.inputs[0], info.outputs[0]
    classes = out.shape[-1] if out.shape else 0
    labels = list(labels) if labels else [f"class{i}" for i in range(classes)]
    run = Path(out_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "model_int8.tflite").write_bytes(data)
    card = {"schema": 1, "model": "model_int8.tflite", "sha256": hashlib.sha256(data).hexdigest(),
            "run": Path(tflite).stem, "labels": labels,
            "input": {"shape": list(inp.shape), "size": inp.shape[1],
                      "color": "grayscale" if inp.shape[-1] == 1 else "rgb"}}
    (run / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    (run / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
    return run


def attach_measurement(profile: dict, m: dict | None) -> dict:
    """Put a measurement next to ``profile_model``'s estimate: ``latency_ms`` stays the estimate,
    ``measured_latency_ms`` is the emulator's, ``latency_source`` says which one to quote."""
    profile = dict(profile)
    if m and m.get("board") == profile.get("board") and m.get("model_sha256") == profile.get("model_sha256"):
        profile["measured_latency_ms"] = [round(v, 2) for v in m["invoke_ms"]]
        # A camera frame: preprocessing, then the inference (what the camera loop does per frame).
        profile["measured_frame_ms"] = [round(a + b, 2) for a, b in zip(m["invoke_ms"], m["preprocess_ms"])]
        profile["measured"] = {k: m[k] for k in ("invoke_instructions", "preprocess_instructions",
                                                  "instructions_per_mac", "cpi_range", "target")}
        profile["latency_source"] = "measured (emulated Cortex-M4, instructions x CPI range)"
    else:
        profile["latency_source"] = "estimate (MACs x cycles/MAC)"
    return profile
