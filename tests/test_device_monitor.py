"""Camera-loop line parsing against a recorded-style transcript (pure functions)."""

from __future__ import annotations

import serial

from facemask_edge.device import framing as fr
from facemask_edge.device.monitor import Prediction, follow, parse_pred_line, parse_transcript

TRANSCRIPT = (
    b"\xff\xfe\x13garbage from a reset\r\n"
    b"facemask-edge 0.1.0 nano33ble: model ok, arena 81234 bytes\r\n"
    b"PRED ms=1200 idx=1 label=without_mask conf=87 us=412345 scores=-120,95\r\n"
    b"PRED ms=1650 idx=0 label=with_mask conf=100 us=412001 scores=127,-128\r\n"
    b"PRED ms=2100 idx=0 label=with_ma"  # cut by a reset
    b"\r\nPRED ms=3 idx=5 label=x conf=50 us=1 scores=1,2\r\n"  # idx out of range: damaged
    b"PRED ms=4 idx=0 label=x conf=150 us=1 scores=1,2\r\n"  # conf out of range
    + fr.encode_ack(1, 2, 3) +  # a stray frame
    b"PRED ms=2550 idx=1 label=without_mask conf=3 us=410000 scores=-127,-126\r\n"
)


def test_parse_one_line():
    p = parse_pred_line("PRED ms=1200 idx=1 label=without_mask conf=87 us=412345 scores=-120,95\r\n")
    assert p == Prediction(1200, 1, "without_mask", 87, 412345, (-120, 95))
    assert parse_pred_line(b"PRED ms=1 idx=0 label=a conf=1 us=2 scores=5 extra=ignored") is not None
    assert parse_pred_line("PREDICT ms=1") is None
    assert parse_pred_line("PRED ms=x idx=0 label=a conf=1 us=2 scores=1") is None
    assert parse_pred_line("hello") is None


def test_transcript_keeps_only_whole_predictions():
    preds = parse_transcript(TRANSCRIPT)
    assert [p.ms for p in preds] == [1200, 1650, 2550]
    assert preds[1].scores == (127, -128) and preds[2].label == "without_mask"


def test_follow_reads_lines_from_a_port():
    port = serial.serial_for_url("loop://", timeout=0.02)
    port.write(TRANSCRIPT)
    seen = []

    def stop():
        return len([x for x in seen if isinstance(x[1], Prediction)]) >= 3

    for item in follow(port, stop=stop, clock=lambda: 42.0):
        seen.append(item)
    preds = [p for _, p in seen if isinstance(p, Prediction)]
    other = [t for _, t in seen if isinstance(t, str)]
    assert [p.ms for p in preds] == [1200, 1650, 2550]
    assert any("model ok" in t for t in other)
    assert all(t == 42.0 for t, _ in seen)
    row = preds[0].csv_row(0.25)
    assert row[1:] == [1200, 1, "without_mask", 87, 412345, "-120 95"]
