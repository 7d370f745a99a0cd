"""The board side of the protocol: a Python twin of ``firmware/common/fe_protocol.c``.

Two engines implement :class:`BoardEngine`: :class:`CBoardProtocol` runs the firmware's own C
code (compiled once with the system C compiler and loaded with ctypes), and
:class:`PyBoardProtocol` is its line-by-line Python twin for machines without a compiler. Both
pass the same golden transcripts (``firmware/common/golden/vectors.txt``), and a fuzz test feeds
them the same random byte streams and compares every byte they answer.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from facemask_edge.device import framing as fr
from facemask_edge.errors import FacemaskError
from facemask_edge.native.build import build_c_library, load_library

__all__ = ["DeviceInfo", "BoardEngine", "PyBoardProtocol", "CBoardProtocol", "make_engine",
           "build_c_library", "RESULT_HISTORY"]

RESULT_HISTORY = 4
FEATURES_SUPPORTED = fr.FEATURE_COUNTS  # FE_FEATURES_SUPPORTED

# infer(input int8 bytes) -> (error code, scores, micros)
InferFn = Callable[[bytes], tuple[int, list[int], int]]
WriteFn = Callable[[bytes], None]


@dataclass
class DeviceInfo:
    """What the board says about itself (``fe_device_info_t``)."""

    board: str
    firmware_version: str
    model_sha256: str
    input_width: int
    input_height: int
    input_channels: int
    num_classes: int
    arena_bytes: int = 0
    free_ram_bytes: int = 0

    @property
    def input_bytes(self) -> int:
        return self.input_width * self.input_height * self.input_channels


class BoardEngine(Protocol):
    """What the simulator needs from a protocol engine."""

    input_bytes: int

    def feed(self, data: bytes) -> None: ...
    def set_error(self, code: int) -> None: ...
    def set_baud(self, baud: int) -> None: ...
    def in_session(self) -> bool: ...
    def camera(self, frame: bytes) -> tuple[int, list[int], int]: ...


@dataclass
class _Stored:
    image_id: int
    label: int
    micros: int
    scores: tuple[int, ...]
    count: int = 0


class PyBoardProtocol:
    """The board's protocol state machine in Python, byte for byte what the C code answers.

    Args:
        info: device description reported in INFO.
        write: called with the bytes of each outgoing frame.
        infer: called with the complete input (``input_bytes`` int8 bytes) when an image is in;
            returns ``(code, scores, micros)``.
    """

    def __init__(self, info: DeviceInfo, write: WriteFn, infer: InferFn):
        self.info = info
        self.write = write
        self.infer = infer
        self.input_bytes = info.input_bytes
        self.input = bytearray(self.input_bytes)
        self.baud = 0
        self.error = self._info_error()
        self.features = 0
        self.hello_ext = False
        self.counter_kind = fr.COUNTER_NONE
        self.last_count: Callable[[], int] | None = None
        self.preprocess_count = 0
        self._session = False
        self._segment = bytearray()
        self.last_seq = 0
        self.frames_ok = self.frames_bad = self.naks = self.images = 0
        self.frame_wanted = False
        self.frame_seq = 0
        self.frame_no = 0
        self._forget()

    # -- public API (mirrors fe_protocol.h) --

    def set_error(self, code: int) -> None:
        self.error = int(code) or self._info_error()

    def set_baud(self, baud: int) -> None:
        self.baud = int(baud)

    def set_counter(self, kind: int, last_count: Callable[[], int] | None, preprocess_count: int = 0) -> None:
        """Offer FEATURE_COUNTS (``fe_protocol_set_counter``)."""
        self.counter_kind, self.last_count, self.preprocess_count = int(kind), last_count, int(preprocess_count)

    def in_session(self) -> bool:
        return self._session

    def camera(self, frame: bytes) -> tuple[int, list[int], int]:
        """The camera loop's inference (``fe_protocol_camera``): ``frame`` is the preprocessed
        camera frame the sketch wrote into the input tensor. When a host asked (FRAME_REQ), the
        input goes out as FRAME messages first and FRAME_END follows the answer.

        Returns:
            ``(code, scores, micros)`` of the inference.
        """
        self.input[:len(frame)] = frame
        wanted = self.frame_wanted and not self._session and not self.error
        if wanted:
            for off in range(0, self.input_bytes, fr.FRAME_DATA_MAX):
                self.write(fr.encode_camera_piece(self.frame_seq, self.frame_no, off,
                                                  bytes(self.input[off:off + fr.FRAME_DATA_MAX])))
        code, scores, micros = self.infer(bytes(self.input))
        k = min(self.info.num_classes, fr.MAX_CLASSES)
        scores = [int(s) for s in scores[:k]] if code == 0 else [0] * k
        micros = int(micros) & 0xFFFFFFFF if code == 0 else 0
        if not wanted:
            return code, scores, micros
        self.frame_wanted = False
        if code != 0:
            self._error(self.frame_seq, code, "invoke failed")
        else:
            label = max(range(k), key=lambda i: (scores[i], -i))
            d = self.info
            self.write(fr.encode_camera_end(self.frame_seq, self.frame_no, d.input_width, d.input_height,
                                            d.input_channels, label, micros, scores))
        self.frame_no = (self.frame_no + 1) & 0xFFFF
        return code, scores, micros

    def _info_error(self) -> int:
        # fe_result_t keeps MAX_CLASSES scores: like fe_protocol_init, refuse to serve more.
        return 0 if 1 <= self.info.num_classes <= fr.MAX_CLASSES else fr.Err.MODEL_INIT

    def feed(self, data: bytes) -> None:
        for piece in _split_keep(data):
            if piece == b"\x00":
                segment = bytes(self._segment)
                self._segment.clear()
                self._end_frame(segment)
            else:
                self._segment += piece
                # The C decoder stops storing past the largest frame; keep memory bounded too.
                limit = 2 * (fr.HEADER + fr.MAX_BODY + fr.CRC) + 16
                if len(self._segment) > limit:
                    del self._segment[limit // 2: -8]

    # -- internals --

    def _forget(self) -> None:
        self.image_active = False
        self.any_id = True
        self.image_id = 0
        self.expected = 0
        self.history: list[_Stored | None] = [None] * RESULT_HISTORY
        self.history_next = 0

    def _position(self) -> tuple[int, int]:
        if self.image_active:
            return self.image_id, self.expected
        return (0 if self.any_id else (self.image_id + 1) & 0xFFFF), 0

    def _nak(self, seq: int, reason: int) -> None:
        image_id, nxt = self._position()
        self.naks += 1
        self.write(fr.encode_nak(seq, image_id, nxt, reason))

    def _error(self, seq: int, code: int, message: str) -> None:
        self.write(fr.encode_error(seq, code, message))

    def _result(self, seq: int, r: _Stored) -> None:
        count = r.count if self.features & fr.FEATURE_COUNTS else None
        self.write(fr.encode_result(seq, r.image_id, r.label, r.micros, r.scores, count))

    def _find(self, image_id: int) -> _Stored | None:
        for r in self.history:
            if r is not None and r.image_id == image_id:
                return r
        return None

    def _end_frame(self, segment: bytes) -> None:
        try:
            raw = fr.cobs_decode(segment)
        except fr.ProtocolError:
            raw = None
        if raw is not None and not raw:
            return  # empty frame between two delimiters
        good = (raw is not None and fr.HEADER + fr.CRC <= len(raw) <= fr.HEADER + fr.MAX_BODY + fr.CRC
                and struct.unpack_from("<H", raw, 2)[0] == len(raw) - fr.HEADER - fr.CRC
                and fr.crc32(raw[:-fr.CRC]) == struct.unpack_from("<I", raw, len(raw) - fr.CRC)[0])
        if not good:
            self.frames_bad += 1
            if self._session:
                self._nak((self.last_seq + 1) & 0xFF, fr.Err.BAD_FRAME)
            return
        msg_type, seq = raw[0], raw[1]
        body = raw[fr.HEADER:-fr.CRC]
        self.last_seq = seq
        self.frames_ok += 1
        if msg_type == fr.Msg.HELLO:
            self._forget()
            self.frame_wanted = False
            self._session = len(body) >= 1 and body[0] == fr.PROTOCOL_VERSION
            self.hello_ext = len(body) >= 2
            self.features = body[1] & FEATURES_SUPPORTED if self.hello_ext and self.last_count else 0
            self._send_info(seq)
        elif msg_type == fr.Msg.CHUNK:
            self._chunk(seq, body)
        elif msg_type == fr.Msg.RESULT_REQ:
            if not self._session:
                self._error(seq, fr.Err.SEQUENCE, "no session")
            else:
                r = self._find(struct.unpack_from("<H", body)[0]) if len(body) >= 2 else None
                if r is not None:
                    self._result(seq, r)
                else:
                    self._error(seq, fr.Err.NO_RESULT, "result not kept")
        elif msg_type == fr.Msg.FRAME_REQ:
            if self._session:
                self._error(seq, fr.Err.BUSY, "in session")
            elif self.error:
                self._error(seq, self.error, "model not ready")
            else:
                self.frame_wanted = True
                self.frame_seq = seq
        elif msg_type == fr.Msg.BYE:
            self._session = False
            self._forget()
            self.write(fr.encode_bye_ack(seq))
        elif msg_type < 0x80:
            self._error(seq, fr.Err.UNKNOWN_MSG, "unknown message")

    def _send_info(self, seq: int) -> None:
        d = self.info
        self.write(fr.encode_info(seq, fr.Info(
            status=self.error, version=fr.PROTOCOL_VERSION, max_body=fr.MAX_BODY,
            rx_window=fr.RX_WINDOW, baud=self.baud, width=d.input_width, height=d.input_height,
            channels=d.input_channels, classes=d.num_classes & 0xFF, arena_bytes=d.arena_bytes,
            free_ram_bytes=d.free_ram_bytes, board=d.board, firmware=d.firmware_version,
            model_sha256=d.model_sha256, extended=self.hello_ext, features=self.features,
            counter=self.counter_kind, preprocess_count=self.preprocess_count)))

    def _chunk(self, seq: int, body: bytes) -> None:
        if not self._session:
            return self._error(seq, fr.Err.SEQUENCE, "no session")
        if self.error:
            return self._error(seq, self.error, "model not ready")
        if len(body) <= fr.CHUNK_HEADER:
            return self._nak(seq, fr.Err.BAD_FRAME)
        image_id, offset, data = fr.parse_chunk(body)
        n = len(data)
        if offset + n > self.input_bytes:
            return self._error(seq, fr.Err.WRONG_SIZE, "chunk past end of input")
        accept = offset == self.expected and (
            image_id == self.image_id if self.image_active
            else offset == 0 and (self.any_id or image_id == (self.image_id + 1) & 0xFFFF))
        if accept:
            if not self.image_active:
                self.image_active = True
                self.any_id = False
                self.image_id = image_id
            self.input[offset:offset + n] = data
            self.expected += n
            self.write(fr.encode_ack(seq, image_id, self.expected))
            if self.expected == self.input_bytes:
                self._run(seq)
            return
        if self.image_active and image_id == self.image_id and offset < self.expected:
            return self.write(fr.encode_ack(seq, image_id, self.expected))
        r = self._find(image_id)
        if r is not None and not (self.image_active and image_id == self.image_id):
            if offset + n == self.input_bytes:
                return self._result(seq, r)
            return self.write(fr.encode_ack(seq, image_id, self.input_bytes))
        self._nak(seq, fr.Err.SEQUENCE)

    def _run(self, seq: int) -> None:
        code, scores, micros = self.infer(bytes(self.input))
        self.image_active = False
        self.expected = 0
        if code != 0:
            return self._error(seq, code, "invoke failed")
        k = min(self.info.num_classes, fr.MAX_CLASSES)
        scores = tuple(int(s) for s in scores[:k])
        label = max(range(k), key=lambda i: (scores[i], -i))
        count = int(self.last_count()) & 0xFFFFFFFF if self.last_count else 0
        r = _Stored(self.image_id, label, int(micros) & 0xFFFFFFFF, scores, count)
        self.history[self.history_next] = r
        self.history_next = (self.history_next + 1) % RESULT_HISTORY
        self.images += 1
        self._result(seq, r)


def _split_keep(data: bytes):
    """Split at zero bytes, keeping each zero as its own piece."""
    start = 0
    data = bytes(data)
    while True:
        z = data.find(0, start)
        if z < 0:
            if start < len(data):
                yield data[start:]
            return
        if z > start:
            yield data[start:z]
        yield b"\x00"
        start = z + 1


# ---- the C engine -----------------------------------------------------------------------------


class _CInfo(ctypes.Structure):
    _fields_ = [("board", ctypes.c_char_p), ("firmware_version", ctypes.c_char_p),
                ("model_sha256", ctypes.c_char_p), ("input_width", ctypes.c_uint16),
                ("input_height", ctypes.c_uint16), ("input_channels", ctypes.c_uint8),
                ("num_classes", ctypes.c_uint8), ("arena_bytes", ctypes.c_uint32),
                ("free_ram_bytes", ctypes.c_uint32)]


_WRITE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t)
_COUNT = ctypes.CFUNCTYPE(ctypes.c_uint32)
_INFER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int8),
                          ctypes.POINTER(ctypes.c_int8), ctypes.POINTER(ctypes.c_uint32))


class CBoardProtocol:
    """The firmware's C protocol handler (``fe_protocol.c``), driven from Python through ctypes.

    Same constructor and methods as :class:`PyBoardProtocol`.
    """

    def __init__(self, info: DeviceInfo, write: WriteFn, infer: InferFn, library: Path | None = None):
        # Loaded only from a private build folder and when its bytes match the build record.
        self._lib = load_library(library or build_c_library())
        lib = self._lib
        lib.fe_sizeof_protocol.restype = ctypes.c_size_t
        lib.fe_protocol_feed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.fe_protocol_in_session.restype = ctypes.c_int
        lib.fe_protocol_in_session.argtypes = [ctypes.c_void_p]
        lib.fe_protocol_set_error.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.fe_protocol_set_baud.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.fe_protocol_camera.restype = ctypes.c_int
        lib.fe_protocol_camera.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int8),
                                           ctypes.POINTER(ctypes.c_uint32)]
        lib.fe_protocol_set_counter.argtypes = [ctypes.c_void_p, ctypes.c_uint8, _COUNT, ctypes.c_uint32]
        lib.fe_protocol_init.argtypes = [ctypes.c_void_p, ctypes.POINTER(_CInfo),
                                         ctypes.POINTER(ctypes.c_int8), _WRITE, _INFER,
                                         ctypes.c_void_p]
        self.info = info
        self.input_bytes = info.input_bytes
        self._strings = [s.encode("ascii", "replace") for s in
                         (info.board, info.firmware_version, info.model_sha256)]
        self._cinfo = _CInfo(*self._strings, info.input_width, info.input_height,
                             info.input_channels, info.num_classes, info.arena_bytes,
                             info.free_ram_bytes)
        self._input = (ctypes.c_int8 * max(1, self.input_bytes))()
        self._state = ctypes.create_string_buffer(lib.fe_sizeof_protocol())
        self._py_write = write
        self._py_infer = infer
        self._write_cb = _WRITE(self._on_write)
        self._infer_cb = _INFER(self._on_infer)
        self._error: BaseException | None = None
        lib.fe_protocol_init(self._state, ctypes.byref(self._cinfo), self._input,
                             self._write_cb, self._infer_cb, None)

    def _on_write(self, ctx, data, n):
        try:
            self._py_write(ctypes.string_at(data, n))
        except BaseException as exc:  # never unwind through C
            self._error = exc

    def _on_infer(self, ctx, inp, scores, micros):
        try:
            code, out, us = self._py_infer(ctypes.string_at(inp, self.input_bytes))
            # `scores` is fe_result_t.scores: FE_MAX_CLASSES bytes, whatever the model says.
            for i, s in enumerate(out[: min(self.info.num_classes, fr.MAX_CLASSES)]):
                scores[i] = int(s)
            micros[0] = int(us) & 0xFFFFFFFF
            return int(code)
        except BaseException as exc:
            self._error = exc
            return fr.Err.INVOKE

    @property
    def input(self) -> bytes:
        return bytes(self._input)

    def feed(self, data: bytes) -> None:
        data = bytes(data)
        self._lib.fe_protocol_feed(self._state, data, len(data))
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc

    def set_error(self, code: int) -> None:
        self._lib.fe_protocol_set_error(self._state, int(code))

    def set_baud(self, baud: int) -> None:
        self._lib.fe_protocol_set_baud(self._state, int(baud))

    def set_counter(self, kind: int, last_count: Callable[[], int] | None, preprocess_count: int = 0) -> None:
        """Offer FEATURE_COUNTS (``fe_protocol_set_counter``)."""
        self._count_cb = _COUNT(lambda: int(last_count()) & 0xFFFFFFFF) if last_count else _COUNT()
        self._lib.fe_protocol_set_counter(self._state, int(kind), self._count_cb, int(preprocess_count))

    def in_session(self) -> bool:
        return bool(self._lib.fe_protocol_in_session(self._state))

    def camera(self, frame: bytes) -> tuple[int, list[int], int]:
        """Same as :meth:`PyBoardProtocol.camera`, through ``fe_protocol_camera``."""
        frame = bytes(frame)[: self.input_bytes]
        ctypes.memmove(self._input, frame, len(frame))
        scores = (ctypes.c_int8 * fr.MAX_CLASSES)()
        micros = ctypes.c_uint32(0)
        code = self._lib.fe_protocol_camera(self._state, scores, ctypes.byref(micros))
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc
        k = min(self.info.num_classes, fr.MAX_CLASSES)
        return int(code), list(scores[:k]), int(micros.value)


def make_engine(kind: str, info: DeviceInfo, write: WriteFn, infer: InferFn):
    """Build a protocol engine: ``"c"``, ``"python"``, or ``"auto"`` (C when it compiles).

    Returns:
        ``(engine, kind_used)``.
    """
    if kind not in ("auto", "c", "python"):
        raise ValueError(f"engine must be auto, c or python, not {kind!r}")
    if kind in ("auto", "c"):
        try:
            return CBoardProtocol(info, write, infer), "c"
        except (FacemaskError, OSError):  # no compiler, sources, or trusted build folder
            if kind == "c":
                raise
    return PyBoardProtocol(info, write, infer), "python"
