"""Options and output helpers shared by the commands."""

from __future__ import annotations

import click

__all__ = ["data_option", "run_dir_argument", "echo_json_summary"]


def data_option(required: bool = False):
    return click.option("--data", required=required, type=str,
                        help="Data set: a folder with one sub-folder per class, or a .zip of one.")


def run_dir_argument():
    return click.argument("run_dir", type=click.Path(file_okay=False))


def echo_json_summary(title: str, figures: dict) -> None:
    """Print a short result block: a title and aligned ``name: value`` lines."""
    click.echo(title)
    width = max((len(k) for k in figures), default=0)
    for key, value in figures.items():
        if isinstance(value, float):
            value = f"{value:.4f}" if value < 100 else f"{value:.1f}"
        click.echo(f"  {key.ljust(width)}  {value}")
