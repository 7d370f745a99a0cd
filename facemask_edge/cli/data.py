"""``facemask-edge data``: look at a data set before training on it."""

from __future__ import annotations

from pathlib import Path

import click

from facemask_edge.cli._common import data_option, data_value

__all__ = ["data"]


@click.command()
@data_option(required=True, multiple=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write manifest.json and skipped.txt here.")
@click.option("--size", type=int, default=None, help="Also decode to this model input size.")
@click.option("--exclude-noncommercial", is_flag=True,
              help="Leave out files of non-commercial sources (MaskedFace-Net, mfn_*).")
def data(data, out, size, exclude_noncommercial):
    """Classes, usable and skipped files, and exact duplicates of a data set."""
    from facemask_edge.data.ingest import scan_dataset

    ds = scan_dataset(data_value(data), size=size, exclude_noncommercial=exclude_noncommercial)
    click.echo(ds.summary_line())
    click.echo(f"classes (output order): {', '.join(ds.classes)}")
    formats: dict[str, int] = {}
    for it in ds.items:
        formats[it.format] = formats.get(it.format, 0) + 1
    click.echo("formats: " + ", ".join(f"{k} {v}" for k, v in sorted(formats.items())))
    click.echo(f"distinct images: {ds.duplicate_groups()} ({len(ds.items) - ds.duplicate_groups()} "
               "exact duplicates, kept in one split together)")
    for s in ds.skipped[:20]:
        click.echo(f"skipped {s['path']}: {s['reason']}")
    if len(ds.skipped) > 20:
        click.echo(f"... and {len(ds.skipped) - 20} more")
    if out:
        ds.write_manifest(Path(out))
        click.echo(f"wrote {Path(out) / 'manifest.json'}")
