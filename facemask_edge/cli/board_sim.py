"""``facemask-edge board-sim RUN_DIR``: a simulated board on a pseudo-terminal."""

from __future__ import annotations

from pathlib import Path

import click

from facemask_edge.cli._common import BOARD, published_port, serve_until_stopped
from facemask_edge.errors import FacemaskError

__all__ = ["board_sim"]


@click.command("board-sim")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--board", "board_name", type=BOARD, default=None,
              help="Report this board and enforce its memory limits. Default: a generous 'sim' board.")
@click.option("--baud", type=int, default=0, show_default=True,
              help="Pace both directions like a UART of this speed (0: as fast as the pty, "
                   "flow-controlled like USB CDC).")
@click.option("--fault", "fault", default=None, metavar="SPEC",
              help="Inject faults: drop=P,corrupt=P (per frame, both directions), reset-after=K "
                   "(images), stall=S[@K] (seconds, after K images), seed=N.")
@click.option("--engine", type=click.Choice(["auto", "c", "python"]), default="auto", show_default=True,
              help="Protocol engine: the firmware's C code (compiled once with cc) or its Python twin.")
@click.option("--camera-every", type=float, default=1.0, show_default=True,
              help="Seconds between camera-loop PRED lines outside a session (0: off).")
@click.option("--frames", "frames", type=click.Path(exists=False, path_type=Path), default=None,
              help="The camera's frames: a folder of images (or one image), cycled through. "
                   "Default: random noise.")
@click.option("--link", "link", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also make this symlink to the pty (a stable port name).")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
def board_sim(run_dir, board_name, baud, fault, engine, camera_every, frames, link, duration):
    """Run a simulated board for RUN_DIR's model on a pseudo-terminal.

    Prints the port path on stdout, then serves until Ctrl-C. Connect with
    `facemask-edge validate RUN_DIR --port PATH` or `facemask-edge monitor --port PATH`.
    """
    from facemask_edge.artifacts.run import Run
    from facemask_edge.device.sim import BoardSimulator, Faults, load_camera_frames

    faults = Faults.parse(fault)
    board = board_name  # a registered name (checked by --board) or None
    if baud < 0:
        raise FacemaskError(f"--baud must be 0 or positive, not {baud}")
    if camera_every < 0:
        raise FacemaskError(f"--camera-every must be 0 or positive, not {camera_every:g}")
    m = Run(run_dir).shipped()
    camera_frames = load_camera_frames(frames) if frames else None
    sim = BoardSimulator(m.data, m.card, board=board, baud=baud, faults=faults, engine=engine,
                         camera_every=camera_every, camera_frames=camera_frames)
    path = sim.start()
    # From here on a Ctrl-C (or the SIGINT a test sends the moment the port answers) must stop
    # the simulator's threads wherever it lands, even before the wait below has begun: it used to
    # hit the status line on a loaded machine, skip sim.stop() and leave the process hanging.
    try:
        with published_port(link, path):
            status = f"status {sim.model.error}: {sim.model.message}" if sim.model.error else "model ready"
            click.echo(f"board-sim: {sim.board_name} on {path}, {baud or 'unpaced'} baud, engine "
                       f"{sim.engine_used}, faults {faults.describe()}, {status}, model {sim.sha256[:12]}... "
                       f"(Ctrl-C to stop)", err=True)
            serve_until_stopped(duration)
    except KeyboardInterrupt:  # before the wait had begun
        pass
    finally:
        sim.stop()
        s = sim.stats
        click.echo(f"board-sim: {s.images} images, {s.camera_frames} camera frames, "
                   f"{s.bytes_in} bytes in, {s.bytes_out} out, dropped {s.dropped_in}/{s.dropped_out}, "
                   f"corrupted {s.corrupted_in}/{s.corrupted_out} (in/out), overrun {s.overrun_bytes} bytes, "
                   f"{s.resets} reset(s), {s.stalls} stall(s)", err=True)
