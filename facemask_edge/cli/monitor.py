"""``facemask-edge monitor``: show a running board's camera-loop predictions live."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import click

__all__ = ["monitor"]


@click.command("monitor")
@click.option("--port", default=None, metavar="URL",
              help="Serial port or URL (default: the one board found on USB).")
@click.option("--baud", type=int, default=921600, show_default=True, help="UART speed (ignored by USB CDC).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also append every prediction to this CSV file.")
@click.option("--count", type=int, default=None, help="Stop after this many predictions.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--quiet-other", is_flag=True, help="Do not echo the board's other lines.")
def monitor(port, baud, csv_path, count, duration, quiet_other):
    """Print each camera-loop prediction with its time, until Ctrl-C."""
    from facemask_edge.device.monitor import CSV_HEADER, Prediction, follow
    from facemask_edge.device.transport import choose_port, open_port

    url = port or choose_port()
    ser = open_port(url, baud=baud, timeout=0.1)
    deadline = time.monotonic() + duration if duration else None
    seen = 0
    writer = fh = None
    if csv_path:
        new = not csv_path.exists() or csv_path.stat().st_size == 0
        fh = open(csv_path, "a", newline="")
        writer = csv.writer(fh)
        if new:
            writer.writerow(CSV_HEADER)
    click.echo(f"monitoring {url} (Ctrl-C to stop)", err=True)

    def stop():
        return (deadline is not None and time.monotonic() >= deadline) or (count is not None and seen >= count)

    try:
        for t, item in follow(ser, stop=stop):
            stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
            if isinstance(item, Prediction):
                seen += 1
                click.echo(f"{stamp}  board {item.ms / 1000:10.3f} s  {item.label:<16} {item.conf:3d}%  "
                           f"{item.us / 1000:8.2f} ms  scores {','.join(map(str, item.scores))}")
                if writer:
                    writer.writerow(item.csv_row(t))
                    fh.flush()
            elif not quiet_other:
                click.echo(f"{stamp}  # {item}", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        if fh:
            fh.close()
        try:
            ser.close()
        except Exception:
            pass
    click.echo(f"{seen} prediction(s)", err=True)
