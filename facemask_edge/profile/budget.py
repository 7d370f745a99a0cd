"""Arena, flash, RAM left and latency estimates of an int8 model against a board's budget.

- Arena: measured with tflite-micro's RecordingMicroAllocator, plus ``ARENA_MARGIN``: the
  optimized kernels on the boards (CMSIS-NN on the Nano, esp-nn on the ESP32) ask for scratch
  buffers the reference kernels do not, and the arena must be 16-byte aligned.
- Flash: the flatbuffer plus what the core, TFLM and the sketch take (``Board.reserved_flash_bytes``).
- RAM left: board RAM minus the reserved RAM, the arena with margin, and the camera frame buffer
  (unless the frame lives in PSRAM).
- Latency: MACs x cycles-per-MAC / clock, with the constants and their sources in the board
  registry (:mod:`facemask_edge.boards`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from facemask_edge.artifacts.tflite import read_tflite
from facemask_edge.boards import Board, get_board
from facemask_edge.convert.runtimes import measure_arena
from facemask_edge.fmt import span

__all__ = ["ARENA_MARGIN", "arena_with_margin", "profile_model", "profile_table"]

# 10 % of the measured arena, at least 2 KiB, rounded up to 16 bytes.
ARENA_MARGIN = {"fraction": 0.10, "min_bytes": 2048,
                "why": "scratch buffers of CMSIS-NN / esp-nn kernels and alignment, which the "
                       "host's reference kernels do not allocate"}


def arena_with_margin(arena: int) -> int:
    margin = max(int(arena * ARENA_MARGIN["fraction"]), ARENA_MARGIN["min_bytes"])
    return (arena + margin + 15) // 16 * 16


def profile_model(model: str | Path | bytes, board: str | Board, arena: int | None = None) -> dict:
    """Profile an int8 ``.tflite`` (path or bytes) for ``board``.

    Returns:
        A dict with ``fits`` (bool), ``reason`` (why not, or ""), ``arena_bytes``,
        ``arena_with_margin_bytes``, ``flash_bytes`` (model), ``flash_used_bytes``,
        ``flash_left_bytes``, ``ram_left_bytes``, ``frame_buffer_bytes``, ``macs``,
        ``latency_ms`` ``[low, high]`` and the constants used.
    """
    b = get_board(board)
    # Read and check the file before anything else runs it (TFLM trusts every offset in it).
    info = read_tflite(model)
    data = info.data
    arena = arena if arena is not None else measure_arena(data)["total"]
    arena_m = arena_with_margin(arena)
    frame = b.frame_bytes
    ram_for_model = b.arena_ram_bytes
    ram_left = ram_for_model - arena_m
    flash_used = b.reserved_flash_bytes + len(data)
    flash_left = b.flash_bytes - flash_used
    reasons = []
    arena_place = "internal RAM"
    if ram_left < 0:
        if b.psram_bytes and arena_m <= b.arena_psram_bytes:
            arena_place = "PSRAM (does not fit internal RAM; slower)"
            ram_left = ram_for_model
        else:
            reasons.append(f"arena {arena_m:,} B (with margin) exceeds the {ram_for_model:,} B of "
                           f"RAM left after the core/sketch ({b.reserved_ram_bytes:,} B) and "
                           f"camera frame ({0 if b.frame_in_psram else frame:,} B)")
    if flash_left < 0:
        reasons.append(f"model {len(data):,} B + core/TFLM/sketch {b.reserved_flash_bytes:,} B "
                       f"exceed the {b.flash_bytes:,} B of flash")
    macs = info.macs
    lo, hi = (macs * c / b.clock_hz * 1000 for c in b.cycles_per_mac)
    return {
        "board": b.name,
        "board_title": b.title,
        "model_sha256": hashlib.sha256(data).hexdigest(),
        "fits": not reasons,
        "reason": "; ".join(reasons),
        "arena_bytes": arena,
        "arena_margin": ARENA_MARGIN,
        "arena_with_margin_bytes": arena_m,
        "arena_placement": arena_place,
        "ram_bytes": b.ram_bytes,
        "reserved_ram_bytes": b.reserved_ram_bytes,
        "frame_buffer_bytes": frame,
        "frame": {"width": b.frame[0], "height": b.frame[1], "bytes_per_pixel": b.frame[2],
                  "in_psram": b.frame_in_psram},
        "ram_left_bytes": ram_left,
        "flash_bytes": len(data),
        "flash_used_bytes": flash_used,
        "flash_left_bytes": flash_left,
        "flash_total_bytes": b.flash_bytes,
        "macs": macs,
        "clock_hz": b.clock_hz,
        "cycles_per_mac": list(b.cycles_per_mac),
        "cycles_source": b.cycles_source,
        "latency_ms": [round(lo, 1), round(hi, 1)],
    }


def profile_table(rows: list[tuple[str, dict]]) -> str:
    """A Markdown table of ``(name, profile)`` rows."""
    head = ("| model | board | arena B | arena+margin B | RAM left B | flash (model) B | "
            "flash left B | MACs | latency ms | fits |")
    lines = [head, "|" + "---|" * 10]
    for name, p in rows:
        lat = p["latency_ms"]
        lat_s = span(lat[0], lat[1])
        lines.append(f"| {name} | {p['board']} | {p['arena_bytes']:,} | "
                     f"{p['arena_with_margin_bytes']:,} | {p['ram_left_bytes']:,} | "
                     f"{p['flash_bytes']:,} | {p['flash_left_bytes']:,} | {p['macs']:,} | "
                     f"{lat_s} | {'yes' if p['fits'] else 'NO'} |")
    return "\n".join(lines)
