"""The camera loop's prediction lines, parsed; and a reader that follows a board's port.

Line format (``firmware/PROTOCOL.md``, section 9)::

    PRED ms=<uptime_ms> idx=<label_index> label=<label> conf=<0..100> us=<inference_us> scores=<s0>,<s1>,...
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

from facemask_edge.device import framing as fr

__all__ = ["Prediction", "parse_pred_line", "parse_transcript", "follow", "CSV_HEADER"]

CSV_HEADER = ["host_time", "board_ms", "idx", "label", "conf", "us", "scores"]


@dataclass(frozen=True)
class Prediction:
    """One camera-loop inference as the board printed it."""

    ms: int
    idx: int
    label: str
    conf: int
    us: int
    scores: tuple[int, ...]

    def csv_row(self, host_time: float) -> list:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(host_time)) + f".{int(host_time * 1000) % 1000:03d}"
        return [stamp, self.ms, self.idx, self.label, self.conf, self.us, " ".join(map(str, self.scores))]


def parse_pred_line(line: str | bytes) -> Prediction | None:
    """Parse one ``PRED`` line; ``None`` for any other line or a damaged one."""
    if isinstance(line, bytes):
        line = line.decode("ascii", "replace")
    line = line.strip()
    if not line.startswith("PRED "):
        return None
    fields = {}
    for token in line[5:].split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    try:
        scores = tuple(int(s) for s in fields["scores"].split(",") if s != "")
        pred = Prediction(ms=int(fields["ms"]), idx=int(fields["idx"]), label=fields["label"],
                          conf=int(fields["conf"]), us=int(fields["us"]), scores=scores)
    except (KeyError, ValueError):
        return None
    if not 0 <= pred.conf <= 100 or pred.idx < 0 or (scores and pred.idx >= len(scores)):
        return None
    return pred


def parse_transcript(data: bytes | str) -> list[Prediction]:
    """Every prediction in a recorded serial transcript (other lines, frames and noise skipped)."""
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    reader = fr.FrameReader(early_lines=True)
    events = reader.feed(bytes(data) + b"\n\x00")
    return [p for p in (parse_pred_line(e.line) for e in events if isinstance(e, fr.Text)) if p]


def follow(port, stop: Callable[[], bool] | None = None,
           clock=time.time) -> Iterator[tuple[float, Prediction | str]]:
    """Yield ``(host_time, Prediction)`` for prediction lines and ``(host_time, text)`` for other
    lines read from an open port, until ``stop()`` is true."""
    reader = fr.FrameReader(early_lines=True)
    while not (stop and stop()):
        waiting = getattr(port, "in_waiting", 0) or 0
        data = port.read(max(1, min(waiting, 4096)))
        if not data:
            continue
        now = clock()
        for ev in reader.feed(data):
            if isinstance(ev, fr.Text):
                pred = parse_pred_line(ev.line)
                yield now, (pred if pred is not None else ev.line)
                if stop and stop():  # one read can carry several lines: --count is exact
                    return
