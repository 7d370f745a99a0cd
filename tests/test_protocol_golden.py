"""One set of golden vectors, two implementations: the firmware's C code and the Python side."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facemask_edge.device import framing as fr
from facemask_edge.device.board import CBoardProtocol, DeviceInfo, PyBoardProtocol
from facemask_edge.paths import firmware_dir

FW = firmware_dir()
VECTORS = FW / "common" / "golden" / "vectors.txt"
sys.path.insert(0, str(VECTORS.parent))
from make_vectors import main as make_vectors  # noqa: E402
from make_vectors import stub_infer  # noqa: E402

HAVE_CC = shutil.which("cc") or shutil.which("gcc")


def parse_vectors(path: Path = VECTORS) -> dict:
    out = {"crc": [], "cobs": [], "frame": [], "transcripts": []}
    cur = None
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        kind, *rest = line.split(" ")
        h = (lambda s: b"" if s == "-" else bytes.fromhex(s))
        if kind == "crc":
            out["crc"].append((h(rest[0]), int(rest[1], 16)))
        elif kind == "cobs":
            out["cobs"].append((h(rest[0]), h(rest[1])))
        elif kind == "frame":
            out["frame"].append((int(rest[0]), int(rest[1]), h(rest[2]), h(rest[3])))
        elif kind == "transcript":
            cur = {"name": rest[0], "steps": []}
            out["transcripts"].append(cur)
        elif kind == "info":
            kv = dict(tok.split("=", 1) for tok in rest)
            cur["info"] = DeviceInfo(kv["board"], kv["firmware"], kv["sha"], int(kv["width"]),
                                     int(kv["height"]), int(kv["channels"]), int(kv["classes"]),
                                     int(kv["arena"]), int(kv["free"]))
            cur["error"], cur["baud"] = int(kv["error"]), int(kv["baud"])
            cur["counter"] = (int(kv["counter"]), int(kv["pre"])) if "counter" in kv else None
        elif kind == "in":
            cur["steps"].append([h(rest[0]), None, False])
        elif kind == "camera":  # a camera frame for the camera loop's inference, not serial bytes
            cur["steps"].append([h(rest[0]), None, True])
        elif kind == "out":
            cur["steps"][-1][1] = h(rest[0])
    return out


V = parse_vectors()


def test_vectors_file_is_current(tmp_path):
    make_vectors(tmp_path / "v.txt")
    assert (tmp_path / "v.txt").read_text() == VECTORS.read_text(), \
        "the board twin changed its answers: review, then run make_vectors.py"


def test_python_crc_cobs_frames_match_vectors():
    assert V["crc"] and V["cobs"] and V["frame"]
    for data, crc in V["crc"]:
        assert fr.crc32(data) == crc
    for raw, enc in V["cobs"]:
        assert fr.cobs_encode(raw) == enc
        assert fr.cobs_decode(enc) == raw
    for t, seq, body, wire in V["frame"]:
        assert fr.encode_frame(t, seq, body) == wire
        assert fr.decode_frame(wire[1:-1]) == fr.Frame(t, seq, body, len(wire) - 1)


def replay(engine_cls, tr, split: int | None) -> None:
    out: list[bytes] = []
    infer = stub_infer(tr["info"].num_classes)
    board = engine_cls(tr["info"], out.append, infer)
    board.set_error(tr["error"])
    board.set_baud(tr["baud"])
    if tr["counter"] is not None:
        board.set_counter(tr["counter"][0], infer.last_count, tr["counter"][1])
    rng = random.Random(split)
    for i, (data, want, camera) in enumerate(tr["steps"]):
        if camera:
            board.camera(data)
        elif split is None:
            board.feed(data)
        else:
            pos = 0
            while pos < len(data):
                n = rng.randrange(1, split + 1)
                board.feed(data[pos:pos + n])
                pos += n
        got = b"".join(out)
        out.clear()
        assert got == want, f"{tr['name']} step {i}: want {want.hex()} got {got.hex()}"


@pytest.mark.parametrize("engine", ["python", "c"])
@pytest.mark.parametrize("split", [None, 1, 7])
def test_board_engines_reproduce_transcripts(engine, split):
    if engine == "c" and not HAVE_CC:
        pytest.skip("no C compiler")
    cls = PyBoardProtocol if engine == "python" else CBoardProtocol
    names = [tr["name"] for tr in V["transcripts"]]
    assert {"one_image", "pipelined", "faults", "no_session", "model_failed", "camera_frames",
            "camera_model_failed"} <= set(names)
    for tr in V["transcripts"]:
        replay(cls, tr, split)


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_c_golden_program(tmp_path):
    """firmware/host/proto_test.c, built with -Wall -Wextra -Werror -pedantic, passes the vectors."""
    exe = tmp_path / "proto_test"
    cc = shutil.which("cc") or shutil.which("gcc")
    build = subprocess.run([cc, "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-pedantic",
                            "-I", str(FW / "common"), str(FW / "host" / "proto_test.c"),
                            str(FW / "common" / "fe_protocol.c"), "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe), str(VECTORS)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr + run.stdout
    assert "0 failures" in run.stdout


@pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"), reason="no ARM cross compiler")
def test_c_code_builds_for_cortex_m4(tmp_path):
    run = subprocess.run(["arm-none-eabi-gcc", "-std=c99", "-Os", "-mcpu=cortex-m4", "-mthumb",
                          "-Wall", "-Wextra", "-Wconversion", "-Werror", "-c",
                          str(FW / "common" / "fe_protocol.c"), "-o", str(tmp_path / "fe.o")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
