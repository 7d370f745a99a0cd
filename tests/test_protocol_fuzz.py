"""The C board handler and its Python twin answer every byte stream identically."""

from __future__ import annotations

import random
import shutil

import pytest

from facemask_edge.device import framing as fr
from facemask_edge.device.board import CBoardProtocol, DeviceInfo, PyBoardProtocol

pytestmark = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")

INFO = DeviceInfo("fuzzboard", "9.9", "ab" * 32, 4, 4, 3, 3, 777, 888)


def infer(data: bytes):
    s = sum(data)
    if data[0] == 0x55:
        return 5, [0, 0, 0], 0
    return 0, [(s % 256) - 128, ((s * 7) % 256) - 128, -((s * 3) % 128)], s


def run(cls, pieces):
    out: list[bytes] = []
    board = cls(INFO, out.append, infer)
    answers = []
    for p in pieces:
        board.feed(p)
        answers.append(b"".join(out))
        out.clear()
    return answers, board.in_session()


def protocol_like_stream(rng: random.Random) -> bytes:
    """Mostly plausible traffic (sequential images, resends, requests) with damage on top."""
    frames, seq, image_id = [fr.hello(0)], 1, rng.randrange(3)
    for _ in range(rng.randrange(5, 40)):
        r = rng.random()
        if r < 0.65:
            off = rng.choice([0, 0, 16, 32, 40]) if rng.random() < 0.3 else rng.choice([0, 16, 32])
            n = min(rng.choice([16, 8, 48, 12]), 48 - off) or 1
            frames.append(fr.chunk(seq, image_id + rng.choice([0, 0, 0, 1, -1]), off,
                                   bytes(rng.randrange(256) for _ in range(n))))
            if off + n >= 48 and rng.random() < 0.7:
                image_id += 1
        elif r < 0.72:
            frames.append(fr.result_req(seq, image_id - rng.randrange(6)))
        elif r < 0.75:
            frames.append(fr.hello(seq))
        elif r < 0.77:
            frames.append(fr.bye(seq))
        elif r < 0.82:
            frames.append(fr.encode_frame(rng.randrange(256), seq,
                                          bytes(rng.randrange(256) for _ in range(rng.randrange(12)))))
        elif r < 0.9:
            frames.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 50))))
        else:
            frames.append(b"PRED ms=1 idx=0 label=x conf=1 us=2 scores=1,2,3\r\n")
        seq += 1
    data = bytearray(b"".join(frames))
    for _ in range(rng.randrange(4)):
        data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
    if rng.random() < 0.2:  # drop a run of bytes
        i = rng.randrange(len(data))
        del data[i:i + rng.randrange(1, 30)]
    return bytes(data)


def test_c_and_python_engines_agree_on_random_streams():
    rng = random.Random(12345)
    checked_bytes = 0
    for trial in range(400):
        data = protocol_like_stream(rng)
        pieces, i = [], 0
        while i < len(data):
            j = i + rng.choice([1, 3, 64, 1000])
            pieces.append(data[i:j])
            i = j
        a = run(PyBoardProtocol, pieces)
        b = run(CBoardProtocol, pieces)
        assert a == b, f"trial {trial}"
        checked_bytes += sum(len(x) for x in a[0])
    assert checked_bytes > 10_000  # the streams made the boards say plenty


def test_oversized_frame_and_long_noise_do_not_break_the_c_handler():
    out: list[bytes] = []
    board = CBoardProtocol(INFO, out.append, infer)
    board.feed(fr.hello(0))
    out.clear()
    board.feed(b"\x00" + bytes(random.Random(0).randrange(1, 256) for _ in range(20000)) + b"\x00")
    naks = [fr.parse_board_message(e) for e in fr.FrameReader().feed(b"".join(out)) if isinstance(e, fr.Frame)]
    assert naks == [fr.Nak(0, 0, fr.Err.BAD_FRAME)]
    out.clear()
    board.feed(fr.chunk(1, 0, 0, bytes(48)))
    msgs = [fr.parse_board_message(e) for e in fr.FrameReader().feed(b"".join(out)) if isinstance(e, fr.Frame)]
    assert isinstance(msgs[0], fr.Ack) and isinstance(msgs[1], fr.Result)
