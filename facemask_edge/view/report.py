"""What the run report page shows, gathered from the files the stages wrote.

Nothing here computes a metric again: the page reads ``summary.json`` (pipeline), the
``evaluation/`` report (float and int8 on the host), every ``validate*/report.json`` and its
``results.jsonl`` (on the board), and ``profile_<board>.json`` (budgets). A run that stopped
half-way shows what exists; missing files are simply absent sections.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RunReport", "Thumb", "load_report"]

MAX_THUMBS = 48


@dataclass
class Thumb:
    """An image the page shows as a thumbnail: why, and the scores."""

    path: Path
    key: str
    why: str  # "board and host disagree" or "wrong"
    true: str
    predicted: str
    scores: dict  # source -> list of int8 scores


@dataclass
class RunReport:
    run: Path
    summary: dict = field(default_factory=dict)
    headline: list = field(default_factory=list)  # (name, value) rows
    stages: list = field(default_factory=list)  # (stage, status, seconds)
    plots: list = field(default_factory=list)  # (title, run-relative path)
    confusions: list = field(default_factory=list)  # (title, classes, matrix)
    budgets: list = field(default_factory=list)  # profile_<board>.json contents
    validations: list = field(default_factory=list)  # (folder, report)
    thumbs: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return " to ".join(_fmt(v) for v in value)
    return str(value)


def load_report(run: Path) -> RunReport:
    """Everything the report page shows for ``run`` (missing parts are left empty)."""
    run = Path(run)
    rep = RunReport(run=run)
    summary = _read(run / "summary.json") or {}
    rep.summary = summary
    rep.headline = [(k, _fmt(v)) for k, v in (summary.get("headline") or {}).items()]
    for name, st in (summary.get("stages") or {}).items():
        rep.stages.append((name, st.get("status", ""), st.get("seconds", "")))
    if not summary:
        rep.notes.append(f"no summary.json in {run}: run `facemask-edge pipeline` to write one")

    seen = set()
    for title, rel in (summary.get("plots") or {}).items():
        if (run / rel).is_file():
            rep.plots.append((title, rel))
            seen.add(rel)
    for png in sorted(run.glob("*.png")) + sorted(run.glob("evaluation/*.png")) + sorted(run.glob("validate*/*.png")):
        rel = png.relative_to(run).as_posix()
        if rel not in seen:
            rep.plots.append((png.stem.replace("_", " "), rel))
            seen.add(rel)

    evaluation = _read(run / "evaluation" / "evaluation.json") or {}
    classes = evaluation.get("classes") or []
    if evaluation.get("float"):
        rep.confusions.append(("float (host)", classes, evaluation["float"].get("confusion_matrix")))
    for kind, entry in (evaluation.get("models") or {}).items():
        if isinstance(entry, dict) and entry.get("tflm"):
            rep.confusions.append((f"{kind} int8 (host, tflite-micro)", classes,
                                   entry["tflm"].get("confusion_matrix")))

    data_root = None
    for folder in sorted(p for p in run.glob("validate*") if p.is_dir()):
        report = _read(folder / "report.json")
        if not report:
            continue
        rep.validations.append((folder.name, report))
        vclasses = report.get("classes") or classes
        if report.get("board", {}).get("confusion"):
            rep.confusions.append((f"int8 on the board ({folder.name})", vclasses, report["board"]["confusion"]))
        data_root = Path(report["data_root"]) if report.get("data_root") else data_root
        rep.thumbs += _validate_thumbs(folder / "results.jsonl", vclasses, data_root)

    for prof in sorted(run.glob("profile_*.json")):
        p = _read(prof)
        if p:
            rep.budgets.append(p)

    # The host's own mistakes (evaluation), for runs that were never validated on a board.
    # Several data roots (a list): their files are relative to the validation report's data_root.
    root = data_root or (Path(summary["data"]) if isinstance(summary.get("data"), str) else None)
    if root is not None and not rep.thumbs:
        for kind, entry in (evaluation.get("models") or {}).items():
            for m in (entry or {}).get("misclassified_tflm", []) if isinstance(entry, dict) else []:
                rep.thumbs.append(Thumb(root / m["path"], m["path"], "wrong", m["true"], m["predicted"],
                                        {"host": m.get("scores")}))
            break
    # Disagreements first: they are what a board bring-up is about.
    rep.thumbs.sort(key=lambda t: t.why != "board and host disagree")
    del rep.thumbs[MAX_THUMBS:]
    return rep


def _validate_thumbs(results: Path, classes: list, root: Path | None) -> list[Thumb]:
    out: list[Thumb] = []
    if root is None or not results.is_file():
        return out
    for line in results.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("kind") != "image" or "board" not in rec or "host" not in rec:
            continue
        board, host, true = rec["board"], rec["host"], rec.get("label")
        if board.get("scores") != host.get("scores"):
            why = "board and host disagree"
        elif board.get("label") != true:
            why = "wrong"
        else:
            continue

        def name(i):
            return classes[i] if isinstance(i, int) and 0 <= i < len(classes) else str(i)

        out.append(Thumb(root / rec["key"], rec["key"], why, name(true), name(board.get("label")),
                         {"board": board.get("scores"), "host": host.get("scores")}))
    return out
