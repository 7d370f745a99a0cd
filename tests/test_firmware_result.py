"""fe_result.c: argmax, confidence and the PRED line, against the Python definitions."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from facemask_edge.export.host import load_host_firmware

# The line format fixed in the project notes (monitor parses it).
PRED = re.compile(r"^PRED ms=(\d+) idx=(\d+) label=(\S+) conf=(\d+) us=(\d+) scores=(-?\d+(?:,-?\d+)*)\r\n$")


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    return load_host_firmware(tmp_path_factory.mktemp("fe_host"))


def python_confidence(score: int, scale: float, zero_point: int) -> int:
    return min(100, max(0, round(100 * (score - zero_point) * float(np.float32(scale)))))


@pytest.mark.parametrize("scale,zp", [(0.00390625, -128), (1 / 255, -128), (0.0123, -20),
                                      (0.1, 0), (0.004, 5), (0.0087, -128)])
def test_confidence_matches_python_round_for_every_score(fw, scale, zp):
    for s in range(-128, 128):
        assert fw.confidence(s, scale, zp) == python_confidence(s, scale, zp), (s, scale, zp)


def test_confidence_ties_round_half_to_even(fw):
    # Softmax output scale 1/256, zp -128: score -96 gives exactly 12.5 %, score -88 15.625 %.
    assert 100 * (-96 + 128) * 0.00390625 == 12.5
    assert fw.confidence(-96, 0.00390625, -128) == 12  # Python: round(12.5) == 12
    assert fw.confidence(-92, 0.00390625, -128) == 14  # 14.0625
    assert fw.confidence(127, 0.00390625, -128) == 100  # 99.6 -> 100
    assert fw.confidence(-128, 0.00390625, -128) == 0


def test_argmax_is_numpy_argmax(fw):
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 16):
        for _ in range(50):
            scores = rng.integers(-128, 128, n).astype(np.int8)
            assert fw.argmax(scores) == int(np.argmax(scores))
    assert fw.argmax(np.array([5, 9, 9, -3], dtype=np.int8)) == 1  # first of a tie


def test_pred_line_exact(fw):
    line = fw.format_pred(123456, 1, "without_mask", 87, 41234, [-100, 95])
    assert line == "PRED ms=123456 idx=1 label=without_mask conf=87 us=41234 scores=-100,95\r\n"
    m = PRED.match(line)
    assert m and m.group(3) == "without_mask" and m.group(6) == "-100,95"


def test_pred_line_extremes(fw):
    line = fw.format_pred(4294967295, 0, "with_mask", 100, 0, [-128, 127, 0])
    assert line == "PRED ms=4294967295 idx=0 label=with_mask conf=100 us=0 scores=-128,127,0\r\n"
    assert PRED.match(line)


def test_label_characters_that_break_fields_are_replaced(fw):
    line = fw.format_pred(1, 0, "mask worn=badly,\tok", 50, 2, [1, 2])
    assert "label=mask_worn_badly__ok " in line
    assert PRED.match(line)


def test_too_small_buffer_writes_nothing(fw):
    full = fw.format_pred(1, 0, "with_mask", 50, 2, [1, 2])
    assert fw.format_pred(1, 0, "with_mask", 50, 2, [1, 2], cap=len(full) + 1) == full
    assert fw.format_pred(1, 0, "with_mask", 50, 2, [1, 2], cap=len(full)) == ""


def test_line_max_macro_holds_the_longest_line(fw):
    """FE_PRED_LINE_MAX (what the sketches allocate) fits the longest possible line and its NUL."""
    text = (Path(__file__).resolve().parents[1] / "firmware/common/fe_result.h").read_text()
    base, per_class = map(int, re.search(
        r"FE_PRED_LINE_MAX\(num_classes, label_len\) \((\d+)u \+ \(label_len\) \+ (\d+)u \* \(num_classes\)\)",
        text).groups())
    for classes in (1, 2, 16):
        label = "x" * 40
        cap = base + len(label) + per_class * classes
        line = fw.format_pred(4294967295, 4294967295, label, 100, 4294967295, [-128] * classes, cap=cap)
        assert len(line) == cap - 1  # exactly full: the bound is tight
        assert fw.format_pred(4294967295, 4294967295, label, 100, 4294967295, [-128] * classes,
                              cap=cap - 1) == ""
