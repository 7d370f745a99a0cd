"""``facemask-edge emulate RUN_DIR``: the Nano firmware on an emulated Cortex-M4, on a pty."""

from __future__ import annotations

import time
from pathlib import Path

import click

from facemask_edge.cli._common import published_port, serve_until_stopped
from facemask_edge.errors import FacemaskError

__all__ = ["emulate"]


@click.command("emulate")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--board", default="nano33ble", show_default=True, metavar="NAME",
              help="Board whose firmware to build (its exported sources, RAM and flash limits).")
@click.option("--tflm", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="TensorFlow Lite Micro tree with CMSIS-NN (default: Chirale_TensorFlowLite in the "
                   "Arduino libraries folder, or $FACEMASK_EDGE_TFLM).")
@click.option("--link", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also make this symlink to the pty (a stable port name).")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--measure-only", is_flag=True,
              help="Build, boot, record the measurements (RUN_DIR/emulate/measure.json) and exit.")
@click.option("--layers/--no-layers", default=True, show_default=True, help="Print the per-layer table.")
def emulate(run_dir, board, tflm, link, duration, measure_only, layers):
    """Build the board firmware for QEMU's mps2-an386 (Cortex-M4F) and run it with its UART on a pty.

    The firmware is the Nano's (firmware/common, the exported model, TFLM with CMSIS-NN, -Os), with a
    board file for the emulated UART and timer. Prints the port path on stdout, the measurements on
    stderr, then serves until Ctrl-C. Connect with `facemask-edge validate RUN_DIR --port PATH`.
    """
    from facemask_edge.emulate import (Emulator, build_for_run, layer_markdown, summary_lines,
                                       write_measurement)

    def say(text: str) -> None:
        click.echo(f"emulate: {text}", err=True)

    t0 = time.monotonic()
    prep = build_for_run(run_dir, board, tflm=tflm, log=say)
    fw = prep.firmware
    lib = fw.tflm
    say(f"TFLM {lib.src} ({lib.objects} objects): " + (f"cached build (first build took {lib.build_seconds:.0f} s)"
                                                       if lib.cached else f"built in {lib.build_seconds:.0f} s"))
    say(f"firmware {fw.elf}: flash {fw.text_bytes + fw.data_bytes:,} bytes, RAM {fw.data_bytes + fw.bss_bytes:,} "
        f"bytes static; linked in {fw.build_seconds:.1f} s")
    emu = Emulator(fw.elf, prep.log)
    path = emu.start()
    try:
        m = write_measurement(prep, emu.boot_report())
        for line in summary_lines(m):
            say(line)
        if layers:
            click.echo(layer_markdown(m), err=True)
        say(f"ready in {time.monotonic() - t0:.1f} s; measurements in {prep.work / 'measure.json'}")
        if measure_only:
            return
        def alive() -> bool:
            return emu.proc is not None and emu.proc.poll() is None

        with published_port(link, path):
            say(f"{board} firmware on qemu mps2-an386, UART on {path}, model {prep.sha256[:12]}... "
                "(Ctrl-C to stop)")
            serve_until_stopped(duration, poll=alive)
        if not alive():
            raise FacemaskError("qemu-system-arm stopped", f"see {prep.log}")
    except KeyboardInterrupt:  # before the wait had begun
        pass
    finally:
        emu.stop()
