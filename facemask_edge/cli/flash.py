"""``facemask-edge flash``: build and upload the firmware with arduino-cli."""

from __future__ import annotations

from pathlib import Path

import click

from facemask_edge.cli._common import board_option

__all__ = ["flash"]


@click.command(help="Build and upload the firmware with arduino-cli. Checks arduino-cli, the core, the "
               "libraries and the board first; with RUN_DIR the run is then exported (into "
               "RUN_DIR/export/<board>/, or --sketch) before the build.")
@click.argument("run_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@board_option(required=True)
@click.option("--port", "-p", help="Serial port (default: found with `arduino-cli board list`).")
@click.option("--sketch", type=click.Path(file_okay=False, path_type=Path),
              help="Sketch folder named after the board (default with RUN_DIR: RUN_DIR/export/<board>).")
@click.option("--build-dir", type=click.Path(file_okay=False, path_type=Path),
              help="arduino-cli build folder (default: build/<board> next to the sketch folder).")
@click.option("--compile-only", is_flag=True, help="Build without uploading (no board needed).")
@click.option("--dry-run", is_flag=True, help="Print the arduino-cli commands, run nothing.")
def flash(run_dir: Path | None, board: str, port: str | None, sketch: Path | None,
          build_dir: Path | None, compile_only: bool, dry_run: bool) -> None:
    from facemask_edge.flash import flash as run_flash

    run_flash(board, run_dir=run_dir, sketch=sketch, port=port, dry_run=dry_run,
              compile_only=compile_only, build_dir=build_dir,
              echo=lambda line: click.echo(line, err=not dry_run))
