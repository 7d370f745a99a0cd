"""Progress display for long work: rich bars on a terminal, periodic lines otherwise.

``progress`` counts steps (images, batches); ``ticking`` is for one long call that cannot report
steps (the TFLite converter): elapsed time on a terminal, a line every 15 s in a log.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

__all__ = ["progress", "ticking", "log"]


def log(message: str) -> None:
    """Print a status line to stderr (stdout stays for results)."""
    print(message, file=sys.stderr, flush=True)


class _Plain:
    """Fallback for pipes and CI logs: one line every few seconds, and one at the end."""

    def __init__(self, description: str, total: int | None):
        self.description, self.total, self.done = description, total, 0
        self._last = time.monotonic()
        self._start = self._last

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= 5:
            self._last = now
            of = f"/{self.total}" if self.total else ""
            log(f"  {self.description}: {self.done}{of} ({now - self._start:.0f} s)")


@contextmanager
def progress(description: str, total: int | None = None, transient: bool = False):
    """Context manager yielding an object with ``advance(n=1)``.

    ``transient``: the terminal bar disappears when done (a line of its own says the result).
    """
    if sys.stderr.isatty():
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), transient=transient) as bar:
            task = bar.add_task(description, total=total)

            class _Rich:
                def advance(self, n: int = 1) -> None:
                    bar.advance(task, n)

            yield _Rich()
    else:
        p = _Plain(description, total)
        yield p
        if total and total > 50:
            log(f"  {description}: {p.done}/{total} done ({time.monotonic() - p._start:.0f} s)")


@contextmanager
def ticking(description: str, every: float = 15.0):
    """Show that one long call is still working: a spinner with the elapsed time on a terminal
    (removed at the end), or ``  description: N s`` every ``every`` seconds in a log."""
    if sys.stderr.isatty():
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      transient=True) as bar:
            bar.add_task(description, total=None)
            yield
        return
    done = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        while not done.wait(every):
            log(f"  {description}: {time.monotonic() - start:.0f} s")

    t = threading.Thread(target=tick, name="ticking", daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()
