"""``facemask-edge profile``."""

from __future__ import annotations

from pathlib import Path

import click

from facemask_edge.cli._common import BOARD
from facemask_edge.errors import BudgetError, FacemaskError

__all__ = ["profile"]


@click.command()
@click.argument("target", type=click.Path())
@click.option("--board", "boards", type=BOARD, multiple=True,
              help="Board(s) to profile for (repeatable; default: all).")
@click.option("--reference", "references", type=click.Path(dir_okay=False), multiple=True,
              help="Also profile this .tflite as a reference point (e.g. vww_96_int8.tflite).")
@click.option("--measure", is_flag=True,
              help="Also run the firmware on the emulated Cortex-M4 (QEMU) and show the measured latency "
                   "and a per-layer table next to the estimate (Nano only; builds once, cached).")
@click.option("--tflm", type=click.Path(file_okay=False), default=None,
              help="TFLM tree for --measure (default: see `facemask-edge emulate --help`).")
def profile(target, boards, references, measure, tflm):
    """Arena, flash, RAM left and latency of TARGET (a run folder or a .tflite) per board.

    Saves profile_<board>.json and profile.md in the run folder. Exits with status 3 when the
    model does not fit a board.
    """
    from facemask_edge.boards import board_names, get_board
    from facemask_edge.profile import ARENA_MARGIN, profile_model, profile_table
    from facemask_edge.artifacts.files import write_json
    from facemask_edge.artifacts.run import Run

    path = Path(target)
    run_dir = path if path.is_dir() else None
    arena = None
    if run_dir:
        shipped = Run(run_dir).shipped()  # missing, replaced or stale: one error line
        model, arena = shipped.path, shipped.card.get("arena_bytes")
    else:
        model = path
        if not model.exists():
            raise FacemaskError(f"{model} not found", "pass a run folder or an int8 .tflite file")
    for ref in references:
        if not Path(ref).exists():
            raise FacemaskError(f"reference model {ref} not found")
    boards = boards or board_names()
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
    measured_text = _measured(run_dir, model, references, boards, results, measure, tflm)
    table = profile_table(rows)
    first = next(iter(results.values()))
    notes = [f"- arena = TFLM RecordingMicroAllocator total + margin (10 %, at least "
             f"{ARENA_MARGIN['min_bytes']} B): {ARENA_MARGIN['why']}",
             "- latency = MACs x cycles-per-MAC / clock:"]
    for b in boards:
        bd = get_board(b)
        notes.append(f"  - {b}: {bd.cycles_per_mac[0]}-{bd.cycles_per_mac[1]} cycles/MAC at "
                     f"{bd.clock_hz / 1e6:.0f} MHz; source: {bd.cycles_source}")
    text = table + "\n\n" + "\n".join(notes) + "\n" + measured_text
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


def _measured(run_dir, model, references, boards, results, measure, tflm) -> str:
    """Measured latency (emulator) next to the estimate: run it with --measure, else show a
    measurement recorded earlier (`emulate`, `profile --measure`) for the same model."""
    import hashlib
    import tempfile

    from facemask_edge.emulate import (EMULATED_BOARDS, attach_measurement, layer_markdown, measure_run,
                                       model_run, read_measurement, summary_lines)

    out = []
    emulated = [b for b in boards if b in EMULATED_BOARDS]
    if not emulated:
        return ""
    targets = [(run_dir, model)] + [(None, Path(r)) for r in references]
    for run, path in targets:
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        for b in emulated:
            if measure:
                if run is None:
                    with tempfile.TemporaryDirectory() as tmp:
                        m = measure_run(model_run(path, Path(tmp) / "run"), b, tflm=tflm)
                else:
                    m = measure_run(run, b, tflm=tflm)
            else:
                m = read_measurement(run, sha) if run is not None else None
            if m is None:
                continue
            if run is not None and b in results:
                results[b] = attach_measurement(results[b], m)
            what = "measured now" if measure else "recorded measurement"
            out += ["", f"## Measured on the emulated Cortex-M4: {Path(path).name}, {b} ({what})", "",
                    *[f"- {line}" for line in summary_lines(m)],
                    f"- estimate for comparison: {results[b]['latency_ms'][0]}-{results[b]['latency_ms'][1]} ms"
                    if run is not None and b in results else "- (reference model: no estimate row above)",
                    f"- {m['target']}; {m['cpi_note']}", "", layer_markdown(m)]
    return "\n".join(out) + ("\n" if out else "")
