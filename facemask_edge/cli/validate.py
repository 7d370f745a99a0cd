"""``facemask-edge validate RUN_DIR --port PORT``: the model on the board, image by image."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["validate"]


@click.command("validate")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", "ports", multiple=True, metavar="URL",
              help="Serial port or URL of a board (repeat for several boards; default: the one "
                   "board found on USB). Paths, socket://, rfc2217://, loop://.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Validate every image of this folder instead of the run's test split.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Results and report folder (default: RUN_DIR/validate).")
@click.option("--baud", type=int, default=921600, show_default=True, help="UART speed (ignored by USB CDC).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=8.0, show_default=True,
              envvar="FACEMASK_EDGE_TIMEOUT", show_envvar=True,
              help="Seconds to wait for a board that does not answer.")
@click.option("--stall-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              envvar="FACEMASK_EDGE_STALL_TIMEOUT", show_envvar=True,
              help="Give up on a board that finishes no image for this many seconds, plus one "
                   "image's wire time (default: 2 x --timeout).")
@click.option("--max-rehandshakes", type=click.IntRange(min=0), default=2, show_default=True,
              envvar="FACEMASK_EDGE_MAX_REHANDSHAKES", show_envvar=True,
              help="Re-handshakes in a row without a finished image before giving up on a board.")
@click.option("--max-retries", type=click.IntRange(min=1), default=8, show_default=True,
              envvar="FACEMASK_EDGE_MAX_RETRIES", show_envvar=True,
              help="Timeouts in a row without the board moving before handshaking again.")
@click.option("--limit", type=int, default=None, help="Only the first N images.")
@click.option("--fresh", is_flag=True, help="Start over instead of resuming earlier results.")
@click.option("--reference", type=click.Choice(["tflm", "tflite"]), default="tflm", show_default=True,
              help="Host int8 reference: tflite-micro, or TFLite BUILTIN_REF kernels.")
@click.option("--chunk", type=int, default=4090, show_default=True, help="Image bytes per frame (max).")
@click.option("--window", type=int, default=None, help="Bytes in flight (default: what the board offers).")
@click.pass_context
def validate(ctx, run_dir, ports, data, out_dir, baud, timeout, stall_timeout, max_rehandshakes, max_retries,
             limit, fresh, reference, chunk, window):
    """Stream test images to the board(s) and compare every result with the host int8 model.

    Writes RUN_DIR/validate/results.jsonl (one line per image: an interrupted run resumes),
    report.json, report.md and confusion.png.
    """
    from facemask_edge.device.session import SessionLimits
    from facemask_edge.progress import log
    from facemask_edge.validate.report import closing_note
    from facemask_edge.validate.runner import validate_run

    verbose = (ctx.find_root().obj or {}).get("verbose")
    report, out = validate_run(run_dir, list(ports), data=data, out_dir=out_dir, baud=baud,
                               timeout=timeout, limit=limit, fresh=fresh, reference=reference,
                               chunk=chunk, window=window, log_fn=log if verbose else None,
                               limits=SessionLimits(stall_timeout, max_rehandshakes, max_retries))
    click.echo(closing_note(report))
    click.echo(f"report: {out / 'report.md'} (json, confusion.png alongside)")
