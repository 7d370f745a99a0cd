"""Frames, COBS, CRC and the stream reader: pure functions, no port."""

from __future__ import annotations

import random

import pytest

from facemask_edge.device import framing as fr
from facemask_edge.errors import ProtocolError


def test_crc32_check_value():
    assert fr.crc32(b"123456789") == 0xCBF43926
    assert fr.crc32(b"") == 0


@pytest.mark.parametrize("raw, encoded", [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
])
def test_cobs_published_examples(raw, encoded):
    assert fr.cobs_encode(raw) == encoded
    assert fr.cobs_decode(encoded) == raw


def test_cobs_roundtrip_random():
    rng = random.Random(3)
    for _ in range(300):
        n = rng.choice([0, 1, 253, 254, 255, 508, rng.randrange(2000)])
        data = bytes(rng.choice([0, 1, 255, rng.randrange(256)]) for _ in range(n))
        enc = fr.cobs_encode(data)
        assert 0 not in enc
        assert len(enc) <= len(data) + len(data) // 254 + 1
        assert fr.cobs_decode(enc) == data


def test_cobs_decode_rejects_truncated():
    with pytest.raises(ProtocolError):
        fr.cobs_decode(b"\x05\x11\x22")


def test_frame_roundtrip_and_size_bound():
    body = bytes(range(256)) * 16
    wire = fr.encode_frame(fr.Msg.CHUNK, 300, body)
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    assert len(wire) <= fr.wire_size(len(body))
    frame = fr.decode_frame(wire[1:-1])
    assert frame == fr.Frame(fr.Msg.CHUNK, 300 & 0xFF, body, len(wire) - 1)


def test_every_single_byte_corruption_is_caught():
    wire = bytearray(fr.encode_ack(5, 7, 4096))
    for i in range(1, len(wire) - 1):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(wire)
            bad[i] ^= flip
            events = fr.FrameReader().feed(bytes(bad))
            assert not any(isinstance(e, fr.Frame) and e.type == fr.Msg.ACK and
                           fr.parse_board_message(e) == fr.Ack(7, 4096) and bytes(bad) != bytes(wire)
                           for e in events), (i, flip)


def test_reader_resynchronises_after_text_and_garbage_in_any_split():
    result = fr.encode_result(9, 3, 1, 1234, [-5, 17])
    stream = (b"boot: facemask-edge 0.1\r\nPRED ms=1 idx=0 label=a conf=5 us=9 scores=1,2\r\n"
              + b"\x13\x37\xfe\x81\x92\xa3\x00\x42\x99garbage\x00\x07\x01\x00" + result + fr.encode_ack(10, 3, 48) + b"half a line")
    rng = random.Random(0)
    for _ in range(50):
        reader = fr.FrameReader()
        events = []
        i = 0
        while i < len(stream):
            j = i + rng.randrange(1, 12)
            events += reader.feed(stream[i:j])
            i = j
        msgs = [fr.parse_board_message(e) for e in events if isinstance(e, fr.Frame)]
        assert msgs == [fr.Result(3, 1, 1234, (-5, 17)), fr.Ack(3, 48)]
        texts = [e.line for e in events if isinstance(e, fr.Text)]
        assert texts[0] == "boot: facemask-edge 0.1"
        assert texts[1].startswith("PRED ms=1")
        assert reader.bad_frames >= 1


def test_reader_gives_up_on_endless_noise():
    reader = fr.FrameReader()
    rng = random.Random(1)
    noise = bytes(rng.randrange(1, 256) for _ in range(3 * fr.MAX_BODY))
    events = reader.feed(noise)
    assert reader.noise_bytes > 0 and len(reader.buffer) <= reader.max_segment
    assert all(not isinstance(e, fr.Frame) for e in events)


def test_info_roundtrip_and_malformed_messages():
    info = fr.Info(0, 1, 4096, 8192, 921600, 96, 96, 3, 2, 81234, 50000, "nano33ble", "0.1.0", "ab" * 32)
    frame = fr.decode_frame(fr.encode_info(4, info)[1:-1])
    assert fr.parse_board_message(frame) == info
    assert info.input_bytes == 96 * 96 * 3
    with pytest.raises(ProtocolError):
        fr.parse_board_message(fr.Frame(fr.Msg.ACK, 0, b"\x01\x02"))
    with pytest.raises(ProtocolError):
        fr.parse_board_message(fr.Frame(fr.Msg.RESULT, 0, bytes([1, 0, 0, 5, 0, 0, 0, 0, 1])))
    assert fr.parse_board_message(fr.Frame(0x99, 0, b"")) is None


def test_overhead_of_a_96px_image_is_small():
    # PROTOCOL.md section 8: 7 chunks + 7 ACKs + 1 RESULT for 27648 bytes.
    image = bytes(random.Random(2).randrange(256) for _ in range(96 * 96 * 3))
    wire = 0
    for off in range(0, len(image), 4090):
        wire += len(fr.chunk(off // 4090, 1, off, image[off:off + 4090]))
        wire += len(fr.encode_ack(0, 1, off + 4090))
    wire += len(fr.encode_result(0, 1, 0, 123456, [10, -10]))
    assert len(image) / wire > 0.98


def _board_msg(wire: bytes):
    return fr.parse_board_message(fr.decode_frame(wire[1:-1]))


def test_camera_frame_messages_roundtrip_and_assemble():
    pixels = bytes(random.Random(5).randrange(256) for _ in range(4 * 3 * 3 * 20))  # 720 bytes
    pieces = [fr.encode_camera_piece(9, 65535, off, pixels[off:off + fr.FRAME_DATA_MAX])
              for off in range(0, len(pixels), fr.FRAME_DATA_MAX)]
    assert all(len(p) <= 201 for p in pieces)  # bodies within the 200-byte board-to-host limit
    end = fr.encode_camera_end(9, 65535, 12, 20, 3, 1, 1234, [-5, 7])
    asm = fr.CameraFrameAssembler()
    assert all(asm.add(_board_msg(p)) is None for p in pieces)
    frame = asm.add(_board_msg(end))
    assert frame == fr.CameraFrame(65535, 12, 20, 3, 1, 1234, (-5, 7), pixels)
    assert frame.rgb().shape == (20, 12, 3) and frame.rgb()[0, 0, 0] == (pixels[0] + 128) % 256
    # A lost piece: the FRAME_END completes nothing (the host asks again).
    for skip in range(len(pieces)):
        asm = fr.CameraFrameAssembler()
        for i, p in enumerate(pieces):
            if i != skip:
                asm.add(_board_msg(p))
        assert asm.add(_board_msg(end)) is None
    # Pieces of an older frame followed by a new one: only the new one counts.
    asm = fr.CameraFrameAssembler()
    asm.add(_board_msg(fr.encode_camera_piece(9, 3, 0, pixels[:184])))
    for p in pieces:
        asm.add(_board_msg(p))
    assert asm.add(_board_msg(end)).pixels == pixels


@pytest.mark.parametrize("wire, match", [
    (fr.encode_frame(fr.Msg.FRAME, 0, b"\x00\x00\x00\x00\x00\x00"), "1..184 data bytes"),
    (fr.encode_frame(fr.Msg.FRAME, 0, bytes(6 + 185)), "1..184 data bytes"),
    (fr.encode_frame(fr.Msg.FRAME_END, 0, bytes(10)), "too short"),
    (fr.encode_camera_end(0, 0, 0, 8, 3, 0, 1, [1, 2]), "width=0"),
    (fr.encode_camera_end(0, 0, 8, 8, 9, 0, 1, [1, 2]), "channels=9"),
    (fr.encode_camera_end(0, 0, 8, 8, 3, 2, 1, [1, 2]), "label 2"),
    (fr.encode_camera_end(0, 0, 8, 8, 3, 0, 0xFFFFFFFF, [1, 2]), "micros"),
    (fr.encode_camera_end(0, 0, 8, 8, 3, 0, 1, [1] * 17), "classes=17"),
    (fr.encode_frame(fr.Msg.FRAME_END, 0, fr.encode_camera_end(0, 0, 8, 8, 3, 0, 1, [1, 2])[1:-1][:5]),
     "too short"),
])
def test_malformed_camera_messages_are_protocol_errors(wire, match):
    with pytest.raises(ProtocolError, match=match):
        _board_msg(wire)


def test_assembler_bounds_the_hosts_memory():
    asm = fr.CameraFrameAssembler()
    asm.MAX_BYTES = 1000
    with pytest.raises(ProtocolError, match="run past"):
        for off in range(0, 2000, 184):
            asm.add(fr.CameraPiece(1, off, bytes(184)))
