"""``facemask-edge flash``: build and upload the firmware with arduino-cli."""

from __future__ import annotations

from pathlib import Path

import click

from facemask_edge.profile.boards import BOARDS

__all__ = ["flash"]


@click.command(help="Build and upload the firmware with arduino-cli. Checks arduino-cli, the core, the "
               "libraries and the board first; with RUN_DIR the run is exported into the sketch "
               "before the build.")
@click.argument("run_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--board", "-b", required=True, type=click.Choice(list(BOARDS)), help="Target board.")
@click.option("--port", "-p", help="Serial port (default: found with `arduino-cli board list`).")
@click.option("--sketch", type=click.Path(file_okay=False, path_type=Path),
              help="Sketch folder (default: firmware/boards/<board>).")
@click.option("--build-dir", type=click.Path(file_okay=False, path_type=Path),
              help="arduino-cli build folder (default: firmware/build/<board>).")
@click.option("--compile-only", is_flag=True, help="Build without uploading (no board needed).")
@click.option("--dry-run", is_flag=True, help="Print the arduino-cli commands, run nothing.")
def flash(run_dir: Path | None, board: str, port: str | None, sketch: Path | None,
          build_dir: Path | None, compile_only: bool, dry_run: bool) -> None:
    from facemask_edge.export import export_run
    from facemask_edge.export.flash import flash as run_flash

    if run_dir is not None:
        if sketch is not None and sketch.name != board:
            from facemask_edge.errors import FacemaskError

            raise FacemaskError(f"--sketch {sketch} must be a folder named {board} to export into",
                                f"use --sketch DIR/{board}, or export first and flash without RUN_DIR")
        if dry_run:
            click.echo(f"# would first run: facemask-edge export {run_dir} --board {board}"
                       + (f" --out {sketch.parent}" if sketch else ""))
        else:
            res = export_run(run_dir, board, out=sketch.parent if sketch else None)
            sketch = res.path
            click.echo(f"exported {run_dir} into {res.path} ({len(res.files)} files written)", err=True)
    run_flash(board, sketch=sketch, port=port, dry_run=dry_run, compile_only=compile_only,
              build_dir=build_dir, echo=lambda line: click.echo(line, err=not dry_run))
