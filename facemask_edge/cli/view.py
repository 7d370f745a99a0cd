"""``facemask-edge view [RUN]``: a local web app (live board, run report, try it)."""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
from pathlib import Path

import click

from facemask_edge.errors import FacemaskError

__all__ = ["view"]


def _default_run() -> Path | None:
    for candidate in (Path("facemask-edge-demo"), Path(".")):
        if (candidate / "model_card.json").is_file() or (candidate / "summary.json").is_file():
            return candidate
    return None


@click.command("view")
@click.argument("run_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", "http_port", type=int, default=8765, show_default=True,
              help="Web server port (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Loopback by default; 0.0.0.0 exposes the page (and the "
                   "board) to the network.")
@click.option("--device", default=None, metavar="URL",
              help="The board's serial port or URL, as validate's --port (a board-sim --link path "
                   "works). Without it the live page says 'no board'.")
@click.option("--baud", type=int, default=921600, show_default=True, help="UART speed (ignored by USB CDC).")
@click.option("--frame-timeout", type=float, default=2.0, show_default=True,
              help="Seconds without a camera frame before the board counts as disconnected.")
def view(run_dir, http_port, host, device, baud, frame_timeout):
    """Serve a local web page: the board's live frames and predictions, RUN's report, and a
    try-it page that runs RUN's int8 model on a photo or the webcam.

    RUN defaults to ./facemask-edge-demo (or the current folder when it is a run).
    Prints the URL, then serves until Ctrl-C.
    """
    from werkzeug.serving import make_server

    from facemask_edge.view.app import create_app

    if not 0 <= http_port <= 65535:
        raise FacemaskError(f"--port must be 0..65535, not {http_port}")
    if frame_timeout <= 0:
        raise FacemaskError(f"--frame-timeout must be positive, not {frame_timeout:g}")
    run = run_dir or _default_run()
    if run is not None and not run.is_dir():
        raise FacemaskError(f"run folder {run} does not exist",
                            "pass a run folder written by `facemask-edge pipeline`, e.g. facemask-edge-demo")
    exposed = not _is_loopback(host)
    link = None
    if device:
        from facemask_edge.artifacts.run import CARD, Run
        from facemask_edge.view.board_link import BoardLink

        sha = None
        if run is not None and Run(run).exists(CARD):
            sha = Run(run).shipped().sha256
        link = BoardLink(device, baud=baud, frame_timeout=frame_timeout, expect_sha256=sha).start()
    app = create_app(run, link=link)
    try:
        server = make_server(host, http_port, app, threaded=True)
    except OSError as exc:
        if link:
            link.stop()
        raise FacemaskError(f"cannot listen on {host}:{http_port}: {exc.strerror or exc}",
                            "choose another --port (0 picks a free one)") from None
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    click.echo(f"facemask-edge view: http://{shown}:{server.server_port}/", color=False)
    if exposed:
        click.echo(f"warning: listening on {host}: anyone on the network can see the board and upload images",
                   err=True)
    click.echo(f"run {run or '(none)'}, board {device or '(none)'}; Ctrl-C to stop", err=True)
    os.sys.stdout.flush()
    # SIGTERM ends the server like Ctrl-C (tests and service managers send it).
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if link:
            link.stop()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
