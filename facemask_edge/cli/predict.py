"""``facemask-edge predict RUN IMAGE...``: the shipped int8 model's answer for your own photos."""

from __future__ import annotations

import json
from pathlib import Path

import click

from facemask_edge.cli._common import run_dir_argument

__all__ = ["predict"]


@click.command()
@run_dir_argument()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout, for scripts.")
@click.option("--port", default=None, metavar="URL",
              help="Also classify the same images on the board at this port/URL and show both "
                   "answers (the board must run this run's model).")
@click.option("--baud", type=int, default=921600, show_default=True, help="UART speed of --port.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=8.0, show_default=True,
              envvar="FACEMASK_EDGE_TIMEOUT", help="Seconds to wait for a board that does not answer.")
def predict(run_dir, images, as_json, port, baud, timeout):
    """Classify IMAGES (files or folders) with RUN_DIR's shipped int8 model.

    Each photo is decoded and preprocessed exactly as the board does (centre crop, box resize,
    pixel - 128) and run in tflite-micro: the label, its confidence and every class's score.
    A file that cannot be classified gets an error line; the others continue (exit status 1).
    """
    from facemask_edge.errors import DataError
    from facemask_edge.predict import expand_images, load_shipped_model, predict_images, predict_on_board

    model, card = load_shipped_model(run_dir)
    files = expand_images(list(images))
    if not files:
        raise DataError(f"no files in {', '.join(map(str, images))}", "pass image files or folders of them")
    preds = predict_images(model, card, files, show_progress=True)
    if port and any(p.error is None for p in preds):
        from facemask_edge.device.session import BoardSession
        from facemask_edge.device.transport import open_port

        p = open_port(port, baud=baud, timeout=0.02)
        try:
            predict_on_board(BoardSession(p, name=port, timeout=timeout), model, card, preds)
        finally:
            p.close()
    failed = [p for p in preds if p.error]
    if as_json:
        click.echo(json.dumps({"run": str(run_dir), "model": card.get("model", "model_int8.tflite"),
                               "model_sha256": card.get("sha256"), "quantization": card.get("quantization"),
                               "labels": card["labels"], "board": port,
                               "images": [p.as_dict() for p in preds]}, indent=1))
    else:
        for p in preds:
            if p.error:
                continue
            click.echo(f"{p.path}: {p.label} {p.confidence:.3f}  ({_scores(p.scores)})")
            b = p.board
            if b is not None and "error" in b:
                click.echo(f"  board: {b['error']}")
            elif b is not None:
                same = "same scores as the host" if b.get("same_as_host") else "DIFFERS from the host"
                click.echo(f"  board: {b['label']} {b['confidence']:.3f}  ({_scores(b['scores'])}), "
                           f"{b['ms']:.1f} ms, {same}")
    for p in failed:
        click.echo(f"error: {p.path}: {p.error}", err=True)
    if failed:
        raise DataError(f"{len(preds) - len(failed)} of {len(preds)} image(s) classified; "
                        f"{len(failed)} could not be read (listed above)")


def _scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{c} {v:.3f}" for c, v in scores.items())
