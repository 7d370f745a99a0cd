"""``facemask-edge profile``."""

from __future__ import annotations

from pathlib import Path

import click

from facemask_edge.cli._common import BOARD
from facemask_edge.errors import BudgetError, FacemaskError
from facemask_edge.fmt import span

__all__ = ["profile"]


@click.command()
@click.argument("target", type=click.Path())
@click.option("--board", "boards", type=BOARD, multiple=True,
              help="Board(s) to profile for (repeatable; default: all).")
@click.option("--reference", "references", type=click.Path(dir_okay=False), multiple=True,
              help="Also profile this .tflite as a reference point (e.g. vww_96_int8.tflite).")
def profile(target, boards, references):
    """Arena, flash, RAM left and latency of TARGET (a run folder or a .tflite) per board.

    Saves profile_<board>.json and profile.md in the run folder. Exits with status 3 when the
    model does not fit a board.
    """
    from facemask_edge.boards import board_names, get_board
    from facemask_edge.profile import ARENA_MARGIN, profile_model, profile_table
    from facemask_edge.runs import read_json, write_json

    path = Path(target)
    run_dir = path if path.is_dir() else None
    model = path / "model_int8.tflite" if run_dir else path
    if not model.exists():
        raise FacemaskError(f"{model} not found",
                            f"convert first: facemask-edge convert {target}" if run_dir
                            else "pass a run folder or an int8 .tflite file")
    for ref in references:
        if not Path(ref).exists():
            raise FacemaskError(f"reference model {ref} not found")
    boards = boards or board_names()
    arena = None
    if run_dir and (run_dir / "model_card.json").exists():
        card = read_json(run_dir / "model_card.json")
        arena = card.get("arena_bytes")
    rows, results = [], {}
    name = run_dir.name if run_dir else model.name
    for b in boards:
        results[b] = profile_model(model, b, arena=arena)
        rows.append((name, results[b]))
    for ref in references:
        ref_arena = None
        for b in boards:
            p = profile_model(ref, b, arena=ref_arena)
            ref_arena = p["arena_bytes"]
            rows.append((Path(ref).name + " (reference)", p))
    table = profile_table(rows)
    first = next(iter(results.values()))
    notes = [f"- arena = TFLM RecordingMicroAllocator total + margin (10 %, at least "
             f"{ARENA_MARGIN['min_bytes']} B): {ARENA_MARGIN['why']}",
             "- latency = MACs x cycles-per-MAC / clock:"]
    for b in boards:
        bd = get_board(b)
        notes.append(f"  - {b}: {span(*bd.cycles_per_mac, digits=1)} cycles/MAC at "
                     f"{bd.clock_hz / 1e6:.0f} MHz; source: {bd.cycles_source}")
    text = table + "\n\n" + "\n".join(notes) + "\n"
    click.echo(text)
    if run_dir:
        for b, p in results.items():
            write_json(run_dir / f"profile_{b}.json", p)
        (run_dir / "profile.md").write_text(text)
    bad = [p for p in results.values() if not p["fits"]]
    if bad:
        raise BudgetError(f"{name} does not fit {bad[0]['board']}: {bad[0]['reason']}",
                          "use a smaller --alpha/--size, grayscale, or --blocks")
    del first
