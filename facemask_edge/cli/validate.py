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
@click.option("--timeout", type=float, default=8.0, show_default=True,
              help="Seconds to wait for a board that does not answer.")
@click.option("--limit", type=int, default=None, help="Only the first N images.")
@click.option("--fresh", is_flag=True, help="Start over instead of resuming earlier results.")
@click.option("--reference", type=click.Choice(["tflm", "tflite"]), default="tflm", show_default=True,
              help="Host int8 reference: tflite-micro, or TFLite BUILTIN_REF kernels.")
@click.option("--chunk", type=int, default=4090, show_default=True, help="Image bytes per frame (max).")
@click.option("--window", type=int, default=None, help="Bytes in flight (default: what the board offers).")
@click.pass_context
def validate(ctx, run_dir, ports, data, out_dir, baud, timeout, limit, fresh, reference, chunk, window):
    """Stream test images to the board(s) and compare every result with the host int8 model.

    Writes RUN_DIR/validate/results.jsonl (one line per image: an interrupted run resumes),
    report.json, report.md and confusion.png.
    """
    from facemask_edge.device.session import BoardSession
    from facemask_edge.device.sim import load_run_model
    from facemask_edge.device.transport import choose_port, open_port
    from facemask_edge.progress import log
    from facemask_edge.validate.report import closing_note
    from facemask_edge.validate.runner import default_out_dir
    from facemask_edge.validate.runner import validate as run_validate
    from facemask_edge.validate.testset import load_validation_set

    verbose = (ctx.find_root().obj or {}).get("verbose")
    model, card = load_run_model(run_dir)
    urls = list(ports) or [choose_port()]
    if len(set(urls)) != len(urls):
        raise click.UsageError("the same --port is given twice")
    opened = []
    try:
        for url in urls:
            opened.append((url, open_port(url, baud=baud, timeout=0.02)))
        vset = load_validation_set(run_dir, data, limit=limit)
        sessions = [BoardSession(p, name=url, timeout=timeout, chunk_size=chunk, window=window,
                                 log=log if verbose else None)
                    for url, p in opened]
        out = out_dir or default_out_dir(run_dir, data)
        report = run_validate(sessions, vset, model, card, out, reference=reference, fresh=fresh)
    finally:
        for _, p in opened:
            try:
                p.close()
            except Exception:
                pass
    click.echo(closing_note(report))
    click.echo(f"report: {out / 'report.md'} (json, confusion.png alongside)")
