"""Progress display for long work: rich bars on a terminal, periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

__all__ = ["progress", "log"]


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
def progress(description: str, total: int | None = None):
    """Context manager yielding an object with ``advance(n=1)``."""
    if sys.stderr.isatty():
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), transient=False) as bar:
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
