"""Frames and messages of the serial protocol (``firmware/PROTOCOL.md``), as pure functions.

A frame on the wire is ``0x00 COBS(type | seq | length u16 | body | crc32) 0x00``. Nothing here
touches a port: encoders return bytes, :class:`FrameReader` turns received bytes into frames,
text lines and noise, whatever way the bytes were split.

Bytes from a board are untrusted: every parser here raises :class:`ProtocolError` (and nothing
else) on malformed input, and every number a board reports is checked against :data:`LIMITS`
before the host sizes a buffer or a wait with it (a board once reported ``micros=0xFFFFFFFF``,
which made the host wait 8,590 s).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from facemask_edge.errors import ProtocolError

__all__ = [
    "PROTOCOL_VERSION", "MAX_BODY", "RX_WINDOW", "CHUNK_HEADER", "FRAME_OVERHEAD", "MAX_CLASSES",
    "LIMITS", "ProtocolError",
    "Msg", "Err", "ERROR_NAMES",
    "crc32", "cobs_encode", "cobs_decode", "encode_frame", "decode_frame", "wire_size",
    "Frame", "BadFrame", "Text", "FrameReader",
    "Info", "Ack", "Nak", "Result", "ErrorMsg", "ByeAck", "CameraPiece", "CameraEnd",
    "CameraFrame", "CameraFrameAssembler", "FRAME_DATA_MAX",
    "hello", "chunk", "result_req", "bye", "frame_req",
    "encode_info", "encode_ack", "encode_nak", "encode_result", "encode_error", "encode_bye_ack",
    "encode_camera_piece", "encode_camera_end",
    "parse_board_message", "parse_chunk", "looks_like_text",
]

PROTOCOL_VERSION = 1

# Optional features the host asks for with HELLO's second byte (PROTOCOL.md 3.1).
FEATURE_COUNTS = 0x01  # RESULT carries the inference's cycle/instruction count
# What the counts count (INFO `counter`).
COUNTER_NONE, COUNTER_CYCLES, COUNTER_INSTRUCTIONS = 0, 1, 2
COUNTER_NAMES = {COUNTER_NONE: "none", COUNTER_CYCLES: "cycles", COUNTER_INSTRUCTIONS: "instructions"}
MAX_BODY = 4096  # FE_MAX_FRAME_BODY of the reference firmware
RX_WINDOW = 8192  # FE_RX_WINDOW of the reference firmware
HEADER = 4
CRC = 4
CHUNK_HEADER = 6
FRAME_OVERHEAD = 2 + 1 + HEADER + CRC  # delimiters, first COBS code, header, CRC
MAX_CLASSES = 16  # FE_MAX_CLASSES: fe_result_t keeps this many scores
FRAME_DATA_MAX = 184  # FE_FRAME_DATA_MAX: input bytes per FRAME (board-to-host bodies <= 200)

# What a board may report, inclusive ranges (PROTOCOL.md, "Limits"). Anything outside is a
# protocol error: these numbers size the host's buffers and waits.
LIMITS = {
    "max_body": (64, 0xFFFF),
    "rx_window": (64, 1 << 20),
    "baud": (1200, 20_000_000),  # or 0: USB CDC
    "width": (1, 4096),
    "height": (1, 4096),
    "channels": (1, 4),
    "classes": (1, MAX_CLASSES),
    "micros": (0, 60_000_000),  # one inference: a minute is already absurd on a microcontroller
}


def _check_range(what: str, name: str, value: int, allow_zero: bool = False) -> int:
    lo, hi = LIMITS[name]
    if not (lo <= value <= hi or (allow_zero and value == 0)):
        zero = "0 or " if allow_zero else ""
        raise ProtocolError(f"{what} reports {name}={value}, outside {zero}{lo}..{hi}",
                            "the firmware does not follow this toolkit's protocol: "
                            "flash the firmware built by this version (facemask-edge flash RUN_DIR)")
    return value


class Msg:
    """Message types."""

    HELLO = 0x01
    CHUNK = 0x02
    RESULT_REQ = 0x03
    BYE = 0x04
    FRAME_REQ = 0x05  # addition to version 1: the next camera frame, please
    INFO = 0x81
    ACK = 0x82
    NAK = 0x83
    RESULT = 0x84
    ERROR = 0x85
    BYE_ACK = 0x86
    FRAME = 0x87  # a piece of the camera frame's input tensor
    FRAME_END = 0x88  # the camera frame's label, scores, inference time


class Err:
    """Error codes (ERROR message, INFO status, NAK reason)."""

    OK = 0
    MODEL_INIT = 1
    ALLOCATE = 2
    BAD_FRAME = 3
    WRONG_SIZE = 4
    INVOKE = 5
    BUSY = 6
    UNKNOWN_MSG = 7
    SEQUENCE = 8
    VERSION = 9
    NO_RESULT = 10


ERROR_NAMES = {
    0: "ok", 1: "model init failed", 2: "AllocateTensors failed (arena too small)",
    3: "bad frame", 4: "wrong size", 5: "Invoke failed", 6: "busy", 7: "unknown message",
    8: "sequence (no session or out of order)", 9: "protocol version", 10: "result not kept",
}


def crc32(data: bytes, crc: int = 0) -> int:
    """CRC-32 of the IEEE 802.3 / zlib kind (``crc32(b"123456789") == 0xCBF43926``)."""
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no delimiters): the result has no zero byte."""
    out = bytearray()
    segments = bytes(data).split(b"\x00")
    for i, segment in enumerate(segments):
        # A zero-free run of 254 bytes or more becomes full 0xFF blocks (no implied zero) plus a
        # tail block; at the very end an empty tail after a full block is left out.
        full = False
        while len(segment) >= 254:
            out.append(0xFF)
            out += segment[:254]
            segment = segment[254:]
            full = True
        if full and not segment and i == len(segments) - 1:
            break
        out.append(len(segment) + 1)
        out += segment
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS-encoded frame (no delimiters). Raises ``ProtocolError`` when malformed."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ProtocolError("zero byte inside a COBS frame")
        end = i + code
        if end > n:
            raise ProtocolError("COBS block runs past the end of the frame")
        out += data[i + 1:end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(msg_type: int, seq: int, body: bytes = b"") -> bytes:
    """The bytes on the wire for one message, delimiters included."""
    raw = struct.pack("<BBH", msg_type, seq & 0xFF, len(body)) + bytes(body)
    raw += struct.pack("<I", crc32(raw))
    return b"\x00" + cobs_encode(raw) + b"\x00"


def wire_size(body_len: int) -> int:
    """Upper bound of the wire size of a frame with a ``body_len``-byte body."""
    raw = HEADER + body_len + CRC
    return raw + raw // 254 + 3


@dataclass(frozen=True)
class Frame:
    """A good frame."""

    type: int
    seq: int
    body: bytes
    wire_len: int = 0


@dataclass(frozen=True)
class BadFrame:
    """Bytes between delimiters that are not a good frame (CRC, COBS or length error)."""

    data: bytes
    reason: str


@dataclass(frozen=True)
class Text:
    """A line of text (camera-loop output, start-up messages), without its line ending."""

    line: str


def decode_frame(segment: bytes) -> Frame | BadFrame:
    """Decode the bytes between two ``0x00`` delimiters."""
    try:
        raw = cobs_decode(segment)
    except ProtocolError as exc:
        return BadFrame(segment, exc.message)
    if len(raw) < HEADER + CRC:
        return BadFrame(segment, "too short")
    msg_type, seq, length = struct.unpack_from("<BBH", raw)
    if length != len(raw) - HEADER - CRC:
        return BadFrame(segment, "length field does not match")
    if crc32(raw[:-CRC]) != struct.unpack_from("<I", raw, len(raw) - CRC)[0]:
        return BadFrame(segment, "CRC mismatch")
    return Frame(msg_type, seq, raw[HEADER:-CRC], len(segment) + 1)


def looks_like_text(data: bytes) -> bool:
    """Mostly printable ASCII (lines of a sketch's output, not noise)."""
    if not data:
        return False
    printable = sum(1 for b in data if 32 <= b < 127 or b in (9, 10, 13))
    return printable >= 0.95 * len(data)


@dataclass
class FrameReader:
    """Split a received byte stream into frames, bad frames and text lines.

    Feed it bytes as they come; :meth:`feed` returns the events completed so far: frames when
    their closing ``0x00`` arrives, text when the next ``0x00`` arrives (or, with
    ``early_lines``, as soon as a line's ``\\n`` does). Counters say how the bytes were spent.

    Args:
        max_segment: longest run of bytes without ``0x00`` kept; longer runs are text or noise.
        early_lines: hand out text lines before a delimiter ends them (monitoring a camera loop).
    """

    max_segment: int = 2 * MAX_BODY + 64
    early_lines: bool = False
    buffer: bytearray = field(default_factory=bytearray)
    bytes_in: int = 0
    frame_bytes: int = 0
    bad_frames: int = 0
    noise_bytes: int = 0
    text_bytes: int = 0

    def feed(self, data: bytes) -> list[Frame | BadFrame | Text]:
        events: list[Frame | BadFrame | Text] = []
        self.bytes_in += len(data)
        self.buffer += data
        while True:
            zero = self.buffer.find(0)
            if zero < 0:
                break
            segment = bytes(self.buffer[:zero])
            del self.buffer[:zero + 1]
            if not segment:
                continue
            events.extend(self._segment(segment))
        # Text without a delimiter yet: hand out complete lines now (the camera loop). Off in a
        # session, where a half-received frame may look like text.
        if self.early_lines and b"\n" in self.buffer and looks_like_text(self.buffer):
            cut = self.buffer.rfind(b"\n") + 1
            events.extend(self._text(bytes(self.buffer[:cut])))
            del self.buffer[:cut]
        if len(self.buffer) > self.max_segment:
            data = bytes(self.buffer)
            self.buffer.clear()
            if looks_like_text(data):
                events.extend(self._text(data))
            else:
                self.noise_bytes += len(data)
                self.bad_frames += 1
                events.append(BadFrame(data[:64], "no delimiter"))
        return events

    def _segment(self, segment: bytes) -> list[Frame | BadFrame | Text]:
        frame = decode_frame(segment)
        if isinstance(frame, Frame):
            self.frame_bytes += len(segment) + 1
            return [frame]
        # Text printed just before a frame ends at that frame's leading delimiter. Keep the lines
        # that read as text, count the rest as noise (a boot ROM at another baud rate, a glitch).
        if looks_like_text(segment):
            return self._text(segment)
        events: list[Frame | BadFrame | Text] = []
        noise = bytearray()
        for line in segment.split(b"\n"):
            if len(line) >= 4 and looks_like_text(line):
                events.extend(self._text(line))
            else:
                noise += line
        if noise:
            self.bad_frames += 1
            self.noise_bytes += len(noise) + 1
            events.append(BadFrame(bytes(noise[:64]), frame.reason))
        return events

    def _text(self, data: bytes) -> list[Text]:
        self.text_bytes += len(data)
        lines = data.replace(b"\r", b"").split(b"\n")
        return [Text(s.decode("ascii", "replace")) for s in lines if s.strip()]


# ---- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Info:
    """INFO: what the board runs and what it can take."""

    status: int
    version: int
    max_body: int
    rx_window: int
    baud: int
    width: int
    height: int
    channels: int
    classes: int
    arena_bytes: int
    free_ram_bytes: int
    board: str
    firmware: str
    model_sha256: str
    # The features extension (only when HELLO carried a features byte and the board knows it).
    extended: bool = False
    features: int = 0
    counter: int = COUNTER_NONE
    preprocess_count: int = 0

    @property
    def input_bytes(self) -> int:
        return self.width * self.height * self.channels


@dataclass(frozen=True)
class Ack:
    id: int
    next_offset: int


@dataclass(frozen=True)
class Nak:
    id: int
    next_offset: int
    reason: int


@dataclass(frozen=True)
class Result:
    """RESULT: raw int8 scores, arg-max label, inference time from the board's timer."""

    id: int
    label: int
    micros: int
    scores: tuple[int, ...]
    count: int | None = None  # cycles/instructions (FEATURE_COUNTS), None when not negotiated


@dataclass(frozen=True)
class ErrorMsg:
    code: int
    message: str

    def describe(self) -> str:
        name = ERROR_NAMES.get(self.code, f"code {self.code}")
        return f"{name}: {self.message}" if self.message else name


@dataclass(frozen=True)
class ByeAck:
    pass


@dataclass(frozen=True)
class CameraPiece:
    """FRAME: ``data`` are bytes ``offset ..`` of camera frame number ``frame``'s input tensor."""

    frame: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class CameraEnd:
    """FRAME_END: what the model answered for camera frame number ``frame``."""

    frame: int
    width: int
    height: int
    channels: int
    label: int
    micros: int
    scores: tuple[int, ...]


@dataclass(frozen=True)
class CameraFrame:
    """A whole camera frame as the model saw it: the int8 input tensor (HWC) and the answer."""

    frame: int
    width: int
    height: int
    channels: int
    label: int
    micros: int
    scores: tuple[int, ...]
    pixels: bytes

    def rgb(self):
        """The input tensor as uint8 pixels (``int8 + 128``), ``(height, width, 3)``."""
        import numpy as np

        x = (np.frombuffer(self.pixels, dtype=np.int8).astype(np.int16) + 128).astype(np.uint8)
        x = x.reshape(self.height, self.width, self.channels)
        return np.repeat(x, 3, axis=2) if self.channels == 1 else x[:, :, :3]


class CameraFrameAssembler:
    """Put FRAME pieces together; a FRAME_END completes the frame when every byte came.

    A piece of another frame number starts over (a FRAME_REQ answered late, or a lost
    FRAME_END); a FRAME_END with bytes missing (a lost piece) gives nothing: ask again.
    """

    MAX_BYTES = 1 << 22  # far above any microcontroller's input tensor; bounds the host's memory

    def __init__(self):
        self._frame: int | None = None
        self._buf = bytearray()

    def add(self, msg) -> CameraFrame | None:
        if isinstance(msg, CameraPiece):
            if msg.frame != self._frame or msg.offset != len(self._buf):
                if msg.offset != 0:
                    self._frame, self._buf = None, bytearray()
                    return None
                self._frame, self._buf = msg.frame, bytearray()
            self._buf += msg.data
            if len(self._buf) > self.MAX_BYTES:
                raise ProtocolError(f"FRAME pieces run past {self.MAX_BYTES} bytes")
            return None
        if isinstance(msg, CameraEnd):
            size = msg.width * msg.height * msg.channels
            buf, same = bytes(self._buf), msg.frame == self._frame
            self._frame, self._buf = None, bytearray()
            if not same or len(buf) != size:
                return None
            return CameraFrame(msg.frame, msg.width, msg.height, msg.channels, msg.label, msg.micros,
                               msg.scores, buf)
        return None


_INFO_FIXED = struct.Struct("<BBHIIHHBBII")
_CAMERA_END = struct.Struct("<HHHBBBI")


def _str(s: str, limit: int) -> bytes:
    b = s.encode("ascii", "replace")[:limit]
    return bytes([len(b)]) + b


def hello(seq: int, features: int | None = None) -> bytes:
    """HELLO; with ``features`` (a FEATURE_* mask, may be 0) the board answers the extended INFO."""
    body = bytes([PROTOCOL_VERSION]) if features is None else bytes([PROTOCOL_VERSION, features & 0xFF])
    return encode_frame(Msg.HELLO, seq, body)


def chunk(seq: int, image_id: int, offset: int, data: bytes) -> bytes:
    return encode_frame(Msg.CHUNK, seq, struct.pack("<HI", image_id & 0xFFFF, offset) + bytes(data))


def result_req(seq: int, image_id: int) -> bytes:
    return encode_frame(Msg.RESULT_REQ, seq, struct.pack("<H", image_id & 0xFFFF))


def bye(seq: int) -> bytes:
    return encode_frame(Msg.BYE, seq)


def frame_req(seq: int) -> bytes:
    return encode_frame(Msg.FRAME_REQ, seq)


def encode_camera_piece(seq: int, frame_no: int, offset: int, data: bytes) -> bytes:
    return encode_frame(Msg.FRAME, seq, struct.pack("<HI", frame_no & 0xFFFF, offset) + bytes(data))


def encode_camera_end(seq: int, frame_no: int, width: int, height: int, channels: int, label: int,
                      micros: int, scores) -> bytes:
    scores = bytes(int(s) & 0xFF for s in scores)
    body = _CAMERA_END.pack(frame_no & 0xFFFF, width, height, channels, label, len(scores),
                            micros & 0xFFFFFFFF) + scores
    return encode_frame(Msg.FRAME_END, seq, body)


def encode_info(seq: int, info: Info) -> bytes:
    body = _INFO_FIXED.pack(info.status, info.version, info.max_body, info.rx_window, info.baud,
                            info.width, info.height, info.channels, info.classes,
                            info.arena_bytes, info.free_ram_bytes)
    body += _str(info.board, 31) + _str(info.firmware, 31) + _str(info.model_sha256, 64)
    if info.extended:
        body += struct.pack("<BBI", info.features, info.counter, info.preprocess_count & 0xFFFFFFFF)
    return encode_frame(Msg.INFO, seq, body)


def encode_ack(seq: int, image_id: int, next_offset: int) -> bytes:
    return encode_frame(Msg.ACK, seq, struct.pack("<HI", image_id & 0xFFFF, next_offset))


def encode_nak(seq: int, image_id: int, next_offset: int, reason: int) -> bytes:
    return encode_frame(Msg.NAK, seq, struct.pack("<HIB", image_id & 0xFFFF, next_offset, reason))


def encode_result(seq: int, image_id: int, label: int, micros: int, scores, count: int | None = None) -> bytes:
    scores = bytes(int(s) & 0xFF for s in scores)
    body = struct.pack("<HBBI", image_id & 0xFFFF, label, len(scores), micros & 0xFFFFFFFF) + scores
    if count is not None:
        body += struct.pack("<I", count & 0xFFFFFFFF)
    return encode_frame(Msg.RESULT, seq, body)


def encode_error(seq: int, code: int, message: str = "") -> bytes:
    return encode_frame(Msg.ERROR, seq, bytes([code]) + message.encode("ascii", "replace")[:60])


def encode_bye_ack(seq: int) -> bytes:
    return encode_frame(Msg.BYE_ACK, seq)


def _read_str(body: bytes, pos: int, what: str) -> tuple[str, int]:
    if pos >= len(body):
        raise ProtocolError(f"{what} ends before its strings")
    n = body[pos]
    s = body[pos + 1:pos + 1 + n]
    if len(s) != n:
        raise ProtocolError(f"{what}: a string runs past the end of the message")
    return s.decode("ascii", "replace"), pos + 1 + n


def parse_board_message(frame: Frame):
    """Decode the body of a board-to-host frame and check its numbers (:data:`LIMITS`).

    Returns:
        ``Info``, ``Ack``, ``Nak``, ``Result``, ``ErrorMsg``, ``ByeAck``, ``CameraPiece`` or
        ``CameraEnd``; ``None`` for a
        type the host does not know (or a host-to-board type, e.g. an echo).

    Raises:
        ProtocolError: the body is malformed or reports an impossible number. Nothing else.
    """
    try:
        return _parse_board_message(frame)
    except ProtocolError:
        raise
    except (struct.error, IndexError, ValueError) as exc:  # a check missed above: still the board's fault
        raise ProtocolError(f"malformed message of type 0x{frame.type:02x}: {exc}") from None


def _parse_board_message(frame: Frame):
    b = frame.body
    t = frame.type
    if t == Msg.INFO:
        if len(b) < _INFO_FIXED.size + 3:
            raise ProtocolError(f"INFO too short ({len(b)} bytes)")
        fixed = _INFO_FIXED.unpack_from(b)
        pos = _INFO_FIXED.size
        board, pos = _read_str(b, pos, "INFO")
        firmware, pos = _read_str(b, pos, "INFO")
        sha, pos = _read_str(b, pos, "INFO")
        ext = {}
        if len(b) - pos >= 6:  # the features extension (PROTOCOL.md 3.1); later additions follow it
            features, counter, pre = struct.unpack_from("<BBI", b, pos)
            ext = {"extended": True, "features": features, "counter": counter, "preprocess_count": pre}
        info = Info(*fixed, board=board, firmware=firmware, model_sha256=sha.lower(), **ext)
        if info.version == PROTOCOL_VERSION and info.status == 0:
            # Another version's fields may mean other things (the session names the version),
            # and a board whose model failed has nothing to stream.
            for name in ("max_body", "rx_window", "width", "height", "channels", "classes"):
                _check_range("INFO", name, getattr(info, name))
            _check_range("INFO", "baud", info.baud, allow_zero=True)
        return info
    if t == Msg.ACK:
        if len(b) != 6:
            raise ProtocolError(f"ACK must have 6 bytes, not {len(b)}")
        return Ack(*struct.unpack("<HI", b))
    if t == Msg.NAK:
        if len(b) != 7:
            raise ProtocolError(f"NAK must have 7 bytes, not {len(b)}")
        return Nak(*struct.unpack("<HIB", b))
    if t == Msg.RESULT:
        if len(b) < 8:
            raise ProtocolError(f"RESULT too short ({len(b)} bytes)")
        image_id, label, k, micros = struct.unpack_from("<HBBI", b)
        # Only a board that agreed to FEATURE_COUNTS appends the count.
        if len(b) not in (8 + k, 12 + k):
            raise ProtocolError("RESULT length does not match its class count")
        _check_range("RESULT", "classes", k)
        _check_range("RESULT", "micros", micros)
        if label >= k:
            raise ProtocolError(f"RESULT label {label} is not one of its {k} classes")
        scores = tuple(struct.unpack_from(f"<{k}b", b, 8))
        count = struct.unpack_from("<I", b, 8 + k)[0] if len(b) == 12 + k else None
        return Result(image_id, label, micros, scores, count)
    if t == Msg.ERROR:
        if len(b) < 1:
            raise ProtocolError("ERROR without a code")
        return ErrorMsg(b[0], b[1:].decode("ascii", "replace"))
    if t == Msg.BYE_ACK:
        return ByeAck()
    if t == Msg.FRAME:
        if not CHUNK_HEADER < len(b) <= CHUNK_HEADER + FRAME_DATA_MAX:
            raise ProtocolError(f"FRAME must carry 1..{FRAME_DATA_MAX} data bytes, not {len(b) - CHUNK_HEADER}")
        frame_no, offset = struct.unpack_from("<HI", b)
        return CameraPiece(frame_no, offset, b[CHUNK_HEADER:])
    if t == Msg.FRAME_END:
        if len(b) < _CAMERA_END.size:
            raise ProtocolError(f"FRAME_END too short ({len(b)} bytes)")
        frame_no, width, height, channels, label, k, micros = _CAMERA_END.unpack_from(b)
        if len(b) != _CAMERA_END.size + k:
            raise ProtocolError("FRAME_END length does not match its class count")
        for name, value in (("width", width), ("height", height), ("channels", channels),
                            ("classes", k), ("micros", micros)):
            _check_range("FRAME_END", name, value)
        if label >= k:
            raise ProtocolError(f"FRAME_END label {label} is not one of its {k} classes")
        scores = tuple(struct.unpack_from(f"<{k}b", b, _CAMERA_END.size))
        return CameraEnd(frame_no, width, height, channels, label, micros, scores)
    return None


def parse_chunk(body: bytes) -> tuple[int, int, bytes]:
    """``(image_id, offset, data)`` of a CHUNK body. Raises ``ProtocolError`` when too short."""
    if len(body) < CHUNK_HEADER:
        raise ProtocolError(f"CHUNK body of {len(body)} bytes has no header")
    image_id, offset = struct.unpack_from("<HI", body)
    return image_id, offset, body[CHUNK_HEADER:]
