"""How figures read in the toolkit's own output: counts with their noun, ranges, seconds.

One home for the small formatting rules, so ``1 epoch`` / ``2 epochs``, ``12.7 cycles/MAC``
(a range whose ends are equal is one number) and ``26.0 s`` read the same in every command.
"""

from __future__ import annotations

__all__ = ["plural", "span", "seconds"]


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``1 epoch``, ``3 epochs`` (``many`` for irregular plurals)."""
    return f"{n} {noun if n == 1 else (many or noun + 's')}"


def span(lo: float, hi: float, digits: int = 0) -> str:
    """A low-high range, ``64-128``; one number when both ends are equal (``12.7``, not
    ``12.7-12.7``)."""
    a, b = f"{lo:.{digits}f}", f"{hi:.{digits}f}"
    return a if a == b else f"{a}-{b}"


def seconds(s: float) -> str:
    """Seconds to a tenth: ``26.0``."""
    return f"{s:.1f}"
