"""Measured latency: instruction or cycle counts from a board, turned into milliseconds.

Why a range: the emulator counts instructions exactly, but a Cortex-M4 does not run one
instruction per cycle. Loads, multiply-accumulates and most data processing take one cycle, while
branches (pipeline refill, 1-3 cycles), load/store multiple and the flash wait states of a 64 MHz
nRF52840 add more; CMSIS-NN's inner loops are mostly single-cycle DSP instructions. So
``CPI_RANGE`` brackets the time at the board's clock: 1.0 (the floor) to 1.5 cycles per
instruction. A board that reports CPU cycles (``counter == "cycles"``) needs no range.
"""

from __future__ import annotations

from facemask_edge.boards import get_board

__all__ = ["CPI_RANGE", "CPI_NOTE", "count_to_ms", "latency_figures"]

CPI_RANGE = (1.0, 1.5)
CPI_NOTE = ("1.0-1.5 cycles per instruction on a Cortex-M4 (single-cycle MAC/DSP and loads; branches, "
            "load/store multiple and flash wait states cost more)")


def count_to_ms(count: float, counter: str, clock_hz: int) -> tuple[float, float]:
    """``(low, high)`` milliseconds of ``count`` instructions or cycles at ``clock_hz``."""
    if counter == "cycles":
        ms = count / clock_hz * 1e3
        return ms, ms
    lo, hi = CPI_RANGE
    return count * lo / clock_hz * 1e3, count * hi / clock_hz * 1e3


def latency_figures(counts: list[int], counter: str, board: str) -> dict:
    """p50/p95/max of per-inference counts and their time on ``board`` (a board name)."""
    import numpy as np

    arr = np.asarray(counts, dtype=np.float64)
    out = {"counter": counter, "images": int(arr.size)}
    if not arr.size:
        return out
    stats = {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)), "max": float(arr.max())}
    out.update(stats)
    try:
        b = get_board(board)
    except Exception:  # an unknown board name: counts only
        return out
    out["board"] = b.name
    out["clock_hz"] = b.clock_hz
    if counter != "cycles":
        out["cpi_range"] = list(CPI_RANGE)
    out["ms"] = {k: list(count_to_ms(v, counter, b.clock_hz)) for k, v in stats.items()}
    return out
