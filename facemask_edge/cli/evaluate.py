"""``facemask-edge evaluate``."""

from __future__ import annotations

import click

from facemask_edge.cli._common import data_option, run_dir_argument

__all__ = ["evaluate"]


@click.command()
@run_dir_argument()
@data_option()
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Report folder (default RUN_DIR/evaluation).")
def evaluate(run_dir, data, out):
    """Compare float, int8 in tflite-micro and int8 in TFLite (reference kernels) on the test split.

    With --data, on every image of that folder instead (photos unlike the training set, say);
    class folders the run does not have are left out.
    """
    from facemask_edge.convert.evaluate import evaluate_run, evaluation_markdown

    report = evaluate_run(run_dir, data, out)
    click.echo(evaluation_markdown(report))
