"""``facemask-edge data``: look at a data set before training on it."""

from __future__ import annotations

from pathlib import Path

import click

from facemask_edge.cli._common import data_option, data_value
from facemask_edge.data.hygiene import DEFAULT_DISTANCE

__all__ = ["data"]


@click.command()
@data_option(required=True, multiple=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write manifest.json and skipped.txt here (and the hygiene report).")
@click.option("--size", type=int, default=None, help="Also decode to this model input size.")
@click.option("--exclude-noncommercial", is_flag=True,
              help="Leave out files of non-commercial sources (MaskedFace-Net, mfn_*).")
@click.option("--hygiene", is_flag=True,
              help="Audit near-duplicates (perceptual hash, mirror included) and conflicting labels; "
                   "writes hygiene.json, hygiene.md and hygiene.png.")
@click.option("--split", "split_path", type=click.Path(), default=None, metavar="RUN|split.json",
              help="With --hygiene (implied): also list near-duplicate clusters straddling this run's "
                   "train/val/test split, and test images with a near-duplicate in train. The report "
                   "goes into the run folder unless --out is given.")
@click.option("--distance", type=int, default=None, metavar="BITS",
              help=f"Hamming distance (of 64 bits) up to which images are near-duplicates.  "
                   f"[default: {DEFAULT_DISTANCE}]")
@click.option("--sheet", type=int, default=24, show_default=True, metavar="N",
              help="Pairs on the contact sheet hygiene.png (most suspicious first; 0: none).")
def data(data, out, size, exclude_noncommercial, hygiene, split_path, distance, sheet):
    """Classes, usable and skipped files, and exact duplicates of a data set; with --hygiene,
    near-duplicates, conflicting labels and split leakage."""
    if hygiene or split_path or distance is not None:
        return _hygiene(data_value(data), out, exclude_noncommercial, split_path, distance, sheet)
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


def _hygiene(data, out, exclude_noncommercial, split_path, distance, sheet) -> None:
    from facemask_edge.data.hygiene import audit, check_distance, write_report
    from facemask_edge.progress import log

    distance = DEFAULT_DISTANCE if distance is None else distance
    check_distance(distance)  # before the scan
    if sheet < 0:
        from facemask_edge.errors import ConfigError

        raise ConfigError(f"--sheet {sheet} is negative", "give the number of pairs to show, 0 for none")
    split = None
    target = Path(out) if out else None
    if split_path:
        split, run_dir = _read_split(Path(split_path))
        target = target or run_dir
    result = audit(data, distance, split, exclude_noncommercial)
    if target is not None:
        for p in write_report(result, target, sheet):
            click.echo(f"wrote {p}")
    else:
        from facemask_edge.data.hygiene import markdown

        click.echo(markdown(result), nl=False)
    log(result.summary_line())


def _read_split(path: Path) -> tuple[dict, Path]:
    """A run folder's split.json (through the run folder's reader), or a split.json file."""
    from facemask_edge.artifacts.run import Run
    from facemask_edge.data.splits import read_split_file
    from facemask_edge.errors import DataError

    if path.is_dir():
        return Run(path).split(), path
    if not path.is_file():
        raise DataError(f"{path} not found", "pass a trained run folder or its split.json to --split")
    return read_split_file(path), path.parent
