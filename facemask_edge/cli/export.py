"""``facemask-edge export``: firmware sources for a board from a converted run."""

from __future__ import annotations

from pathlib import Path

import click

from facemask_edge.cli._common import board_option

__all__ = ["export"]


@click.command(help="Generate a board's firmware sources from a converted run: the model as a C array, "
               "model_settings.h, an op resolver with exactly the model's ops, and copies of "
               "firmware/common. Refuses a model that does not fit the board.")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@board_option(required=True)
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Folder that receives the complete <board>/ sketch or the library zip "
                   "(default: RUN_DIR/export).")
@click.option("--format", "fmt", type=click.Choice(["sketch", "arduino-library"]), default="sketch",
              show_default=True, help="A sketch folder, or a zip for Arduino IDE's 'Add .ZIP Library'.")
def export(run_dir: Path, board: str, out: Path | None, fmt: str) -> None:
    from facemask_edge.export import export_run

    res = export_run(run_dir, board, out=out, fmt=fmt)
    b = res.budget
    click.echo(f"{res.path}")
    click.echo(f"  model   {res.model_bytes} bytes, sha256 {res.sha256[:16]}")
    click.echo(f"  ops     {', '.join(res.ops)}")
    click.echo(f"  arena   {b.arena_bytes} bytes used, {b.arena_with_margin_bytes} allocated ({b.source})")
    if fmt == "sketch":
        changed = len(res.files)
        click.echo(f"  files   {changed} written" if changed else "  files   unchanged")
        click.echo(f"  next    facemask-edge flash --board {board} --sketch {res.path}")
    else:
        click.echo("  next    Arduino IDE: Sketch > Include Library > Add .ZIP Library...")
