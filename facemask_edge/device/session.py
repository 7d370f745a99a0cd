"""The host side of the protocol: handshake, then pipelined image streaming with retries.

:class:`BoardSession` takes an open port (anything with ``read``/``write``), so tests pass a pty
from the simulator and the CLI builds the port at the edge. Streaming keeps the board's receive
window full across image boundaries (go-back-N on NAK or timeout), asks again for lost results,
and re-handshakes when the board has restarted, resending only the images without a result.

Every wait is bounded, whatever the board does: a board may answer the handshake and then
ignore images, acknowledge images the host never sent, or report absurd numbers. Retries and
re-handshakes without a finished image are counted and capped, and a no-progress deadline
(``stall_timeout``) ends the session with a :class:`DeviceTimeout` that says how far it got.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from facemask_edge.device import framing as fr
from facemask_edge.errors import DeviceError, DeviceTimeout, ModelMismatch, ProtocolError

__all__ = ["BoardSession", "BoardResult", "StreamStats", "ImageSource", "SessionLimits"]


@dataclass(frozen=True)
class SessionLimits:
    """How long and how often a session insists before it gives up on a board.

    Args:
        stall_timeout: seconds without a finished image before the session gives up (``None``:
            twice the session's ``timeout``); the wire time of one image at the board's baud
            rate is added, so slow UARTs are not cut short.
        max_rehandshakes: re-handshakes in a row without a finished image between them.
        max_retries: timeouts in a row (go-back and resend) without the board moving, before
            the session tries a re-handshake.
    """

    stall_timeout: float | None = None
    max_rehandshakes: int = 2
    max_retries: int = 8

    def __post_init__(self):
        if self.stall_timeout is not None and not self.stall_timeout > 0:
            raise ValueError("stall_timeout must be positive")
        if self.max_rehandshakes < 0 or self.max_retries < 1:
            raise ValueError("max_rehandshakes must be >= 0 and max_retries >= 1")


@dataclass(frozen=True)
class BoardResult:
    """One image's answer from the board."""

    key: object
    label: int
    scores: tuple[int, ...]
    micros: int
    port: str
    count: int | None = None  # cycles/instructions of the inference, when the board reports them
    counter: str = ""  # what count counts (framing.COUNTER_NAMES), "" without counts
    board: str = ""  # the board's name from INFO


#: Wire bytes the board must have answered before the measured link rate replaces the nominal one.
MIN_MEASURED = 8192


@dataclass
class StreamStats:
    """What the link did. Byte counts are wire bytes (frames with delimiters, text, noise)."""

    images: int = 0
    payload_bytes: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    chunks_sent: int = 0
    chunks_resent: int = 0
    naks: int = 0
    timeouts: int = 0
    retries: int = 0
    result_requests: int = 0
    resends: int = 0
    resets: int = 0
    bad_frames_in: int = 0
    noise_bytes_in: int = 0
    text_lines: int = 0
    elapsed_s: float = 0.0
    stream_bytes_out: int = 0  # bytes written while streaming (no handshakes)
    window_full_s: float = 0.0
    # Estimated time the line had to stand still because the board computed longer than its
    # receive window lasts on the wire (it reads nothing meanwhile): not the host's doing.
    board_stall_s: float = 0.0
    # The link as measured: wire bytes the board took off the line (answered frames) and the
    # seconds during which it had unanswered bytes waiting. Their ratio is what the line really
    # carries, inference pauses included (an emulator's pty, a slow USB hub, a radio bridge).
    drained_bytes: int = 0
    busy_s: float = 0.0

    @property
    def measured_rate(self) -> float | None:
        """Bytes per second the board took, once at least ``MIN_MEASURED`` bytes were measured."""
        if self.drained_bytes < MIN_MEASURED or self.busy_s <= 0:
            return None
        return self.drained_bytes / self.busy_s

    def merge(self, other: "StreamStats") -> None:
        for name in self.__dataclass_fields__:
            if name == "elapsed_s":
                self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
            else:
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class ImageSource:
    """Where a session takes its images from: ``take()`` gives ``(key, data)`` or ``None`` when
    there is nothing left; ``give_back`` returns an image a failed session could not finish."""

    def take(self):  # pragma: no cover - interface
        raise NotImplementedError

    def give_back(self, key, data) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class _ListSource(ImageSource):
    def __init__(self, items):
        self._items = deque(items)

    def take(self):
        return self._items.popleft() if self._items else None

    def give_back(self, key, data) -> None:
        self._items.appendleft((key, data))


@dataclass(eq=False)
class _Slot:
    key: object
    data: bytes
    id: int
    sent: int = 0
    acked: int = 0
    high: int = 0  # furthest byte ever sent: chunks below it are resends
    req_at: float | None = None  # when RESULT_REQ was last sent
    req_abs: int | None = None


def _seq_abs(count: int, seq: int) -> int:
    """The absolute number of the most recent frame sent whose seq byte is ``seq``."""
    last = count - 1
    return last - ((last - seq) & 0xFF)


class BoardSession:
    """A protocol session with one board on an open port.

    Args:
        port: open port (``read(n)``, ``write(b)``, optional ``in_waiting``), read timeout small.
        name: how the port is called in messages.
        timeout: seconds to wait for a board that says nothing (handshake, or silence mid-stream).
        chunk_size: largest image bytes per CHUNK (capped by the board's ``max_body``).
        window: bytes in flight without ACK (capped by the board's ``rx_window``).
        log: called with human-readable notes (re-handshakes, board text).
        clock: time source (tests).
        limits: when to give up on a board that answers but makes no progress
            (:class:`SessionLimits`; default: its defaults).
    """

    HELLO_INTERVAL = 0.5
    MAX_IMAGES_IN_FLIGHT = 3  # the board remembers 4 results: a lost one can be asked for

    def __init__(self, port, name: str | None = None, timeout: float = 5.0,
                 chunk_size: int = 4090, window: int | None = None,
                 log: Callable[[str], None] | None = None, clock=time.monotonic,
                 limits: SessionLimits | None = None):
        self.port = port
        self.name = name or str(getattr(port, "name", None) or getattr(port, "port", None) or "port")
        self.timeout = float(timeout)
        self.chunk_size = int(chunk_size)
        self.window_limit = window
        self.log = log or (lambda msg: None)
        self.clock = clock
        self.limits = limits or SessionLimits()
        self.info: fr.Info | None = None
        self.stats = StreamStats()
        self.reader = fr.FrameReader()
        self.last_text: deque[str] = deque(maxlen=5)
        self._count = 0  # frames sent
        self._fence = 0  # answers to frames sent before this absolute number are stale
        self._expect: dict = {}
        self._echo = False
        self.on_text: Callable[[str], None] | None = None  # every text line (camera-loop PRED lines)

    # ---- low level ----

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except Exception as exc:  # serial.SerialTimeoutException, OSError
            if "timeout" in type(exc).__name__.lower() or "timeout" in str(exc).lower():
                raise DeviceTimeout(f"writing to {self.name} timed out",
                                    "the board stopped reading; reset it and try again") from None
            raise DeviceError(f"writing to {self.name} failed: {exc}", "check the cable") from None
        self.stats.bytes_out += len(data)

    def _next_seq(self) -> int:
        seq = self._count & 0xFF
        self._count += 1
        return seq

    def _read_events(self) -> list:
        try:
            waiting = getattr(self.port, "in_waiting", 0) or 0
            data = self.port.read(max(1, min(waiting, 65536)))
        except Exception as exc:
            raise DeviceError(f"reading from {self.name} failed: {exc}",
                              "the board was unplugged or reset") from None
        if not data:
            return []
        self.stats.bytes_in += len(data)
        before_noise, before_bad = self.reader.noise_bytes, self.reader.bad_frames
        events = self.reader.feed(data)
        self.stats.noise_bytes_in += self.reader.noise_bytes - before_noise
        self.stats.bad_frames_in += self.reader.bad_frames - before_bad
        out = []
        for ev in events:
            if isinstance(ev, fr.Text):
                self.stats.text_lines += 1
                self.last_text.append(ev.line)
                self.log(f"{self.name}: {ev.line}")
                if self.on_text is not None:
                    self.on_text(ev.line)
            elif isinstance(ev, fr.Frame):
                if ev.type < 0x80:
                    self._echo = True
                    continue
                try:
                    msg = fr.parse_board_message(ev)
                except ProtocolError as exc:
                    # The CRC was good, so the line did not do this: the board sent it.
                    raise ProtocolError(f"board on {self.name} sent a malformed message: {exc.message}",
                                        exc.hint or "the firmware does not speak this toolkit's protocol; "
                                        "flash this version's firmware (facemask-edge flash RUN_DIR)") from None
                if msg is not None:
                    out.append((ev.seq, msg))
        return out

    def _stale(self, seq: int) -> bool:
        return _seq_abs(self._count, seq) < self._fence

    # ---- handshake ----

    def handshake(self, expect_sha256: str | None = None, expect_shape: tuple[int, int, int] | None = None,
                  expect_classes: int | None = None, on_other=None) -> fr.Info:
        """Say HELLO until the board answers INFO, then check it is the board we want.

        Args:
            expect_sha256: the run's model hash; a board running another model is refused.
            expect_shape: ``(height, width, channels)`` of the model input.
            expect_classes: number of outputs.
            on_other: called with ``(seq, message)`` for other messages that arrive meanwhile.

        Raises:
            DeviceTimeout: no INFO within ``timeout`` (the message says what came instead).
            ModelMismatch: the board runs another model, or one with another input shape.
            DeviceError: the board reports that its model failed to load.
            ProtocolError: the board speaks another protocol version.
        """
        self._expect = dict(expect_sha256=expect_sha256, expect_shape=expect_shape,
                            expect_classes=expect_classes)
        if hasattr(self.port, "reset_input_buffer") and self.info is None:
            try:
                self.port.reset_input_buffer()
            except Exception:
                pass
        start = self.clock()
        deadline = start + self.timeout
        next_hello = start
        hellos: set[int] = set()
        bytes_at_start = self.stats.bytes_in
        noise_at_start, text_at_start = self.reader.noise_bytes, self.reader.text_bytes
        info = None
        while info is None:
            now = self.clock()
            if now >= deadline:
                raise self._no_info_error(self.stats.bytes_in - bytes_at_start,
                                          self.reader.noise_bytes - noise_at_start,
                                          self.reader.text_bytes - text_at_start)
            if now >= next_hello:
                abs_no = self._count
                seq = self._next_seq()
                hellos.add(seq)
                self._fence = abs_no
                # Ask for per-inference counts; a board without them ignores the byte.
                self._write(fr.hello(seq, fr.FEATURE_COUNTS))
                next_hello = now + self.HELLO_INTERVAL
            for seq, msg in self._read_events():
                if isinstance(msg, fr.Info) and seq in hellos:
                    info = msg
                    break
                if on_other is not None:
                    on_other(seq, msg)
        self._check_info(info)
        self.info = info
        return info

    def _no_info_error(self, got: int, noise: int, text: int) -> DeviceError:
        t = f"{self.timeout:g} s"
        if self._echo:
            return DeviceTimeout(f"{self.name} echoes what is sent and no board answered within {t}",
                                 "this is a loopback or a terminal, not a board")
        pending = bytes(self.reader.buffer)  # text without a frame after it is still pending
        if fr.looks_like_text(pending):
            text += len(pending)
            complete = pending[:pending.rfind(b"\n") + 1]
            lines = [s.strip() for s in complete.decode("ascii", "replace").splitlines() if s.strip()]
            self.last_text.extend(lines[-2:])
        else:
            noise += len(pending)
        if noise > text:
            return ProtocolError(f"{self.name} sent {got} bytes in {t}, none of them a protocol frame",
                                 "wrong baud rate (--baud), or not the facemask-edge firmware")
        if self.last_text:
            # A line cut by a buffer boundary is a poor witness: prefer a longer recent one.
            last = max(reversed(self.last_text), key=lambda line: min(len(line), 12))[:60]
            return DeviceTimeout(f"{self.name} printed text but never answered HELLO within {t} "
                                 f"(last line: {last!r})",
                                 "flash the facemask-edge firmware of this version: facemask-edge flash RUN_DIR")
        if got:
            return ProtocolError(f"{self.name} sent {got} bytes in {t}, none of them a protocol frame",
                                 "wrong baud rate (--baud), or not the facemask-edge firmware")
        return DeviceTimeout(f"no answer from {self.name} within {t}",
                             "check that the board is powered and runs the facemask-edge firmware "
                             "(facemask-edge flash RUN_DIR), or raise --timeout")

    def _check_info(self, info: fr.Info) -> None:
        if info.version != fr.PROTOCOL_VERSION:
            raise ProtocolError(f"board on {self.name} speaks protocol version {info.version}, "
                                f"this toolkit version {fr.PROTOCOL_VERSION}",
                                "flash firmware built by this toolkit version (facemask-edge flash RUN_DIR)")
        if info.status != 0:
            what = fr.ERROR_NAMES.get(info.status, f"error {info.status}")
            raise DeviceError(f"board on {self.name} ({info.board}) reports: {what}",
                              "the model does not fit or does not load on this board; "
                              "check facemask-edge profile RUN_DIR --board " + (info.board or "BOARD"))
        sha = self._expect.get("expect_sha256")
        if sha and info.model_sha256.lower() != sha.lower():
            theirs = info.model_sha256[:12] or "none"
            raise ModelMismatch(f"board on {self.name} runs model {theirs}..., the run's model is "
                                f"{sha[:12]}...",
                                "flash this run's model (facemask-edge flash RUN_DIR), or validate the run "
                                "whose model is on the board")
        shape = self._expect.get("expect_shape")
        if shape and (info.height, info.width, info.channels) != tuple(shape):
            raise ModelMismatch(f"board on {self.name} takes {info.height}x{info.width}x{info.channels} "
                                f"inputs, the model {shape[0]}x{shape[1]}x{shape[2]}",
                                "flash this run's firmware: facemask-edge flash RUN_DIR")
        classes = self._expect.get("expect_classes")
        if classes and info.classes != classes:
            raise ModelMismatch(f"board on {self.name} has {info.classes} outputs, the model {classes}",
                                "flash this run's firmware: facemask-edge flash RUN_DIR")

    # ---- streaming ----

    def stream(self, source, on_result: Callable[[BoardResult], None], stop=None) -> StreamStats:
        """Stream every image of ``source`` and call ``on_result`` once per image.

        Args:
            source: an :class:`ImageSource`, or a list of ``(key, int8 bytes)``.
            on_result: called (in this thread) with each :class:`BoardResult`.
            stop: optional ``threading.Event``; when set, streaming ends after in-flight images.

        Returns:
            The session's :class:`StreamStats` (cumulative).

        Raises:
            DeviceError: the board failed or stopped answering; images it did not finish are given
                back to ``source`` first.
        """
        if self.info is None:
            raise DeviceError("stream() before handshake()")
        if not isinstance(source, ImageSource):
            source = _ListSource(source)
        self._slots: list[_Slot] = []
        try:
            self._stream(source, on_result, stop)
        except BaseException:
            for slot in reversed(self._slots):
                source.give_back(slot.key, slot.data)
            self._slots = []
            raise
        return self.stats

    FRAMES_IN_WINDOW = 3

    def _limits(self) -> tuple[int, int]:
        """Chunk size and window: chunks small enough that three fit in the window, so the line
        stays busy while an ACK travels back (two frames of slack), capped by ``max_body``."""
        info = self.info
        window = info.rx_window if self.window_limit is None else min(self.window_limit, info.rx_window)
        per_frame = window // self.FRAMES_IN_WINDOW
        fit = per_frame - (fr.wire_size(per_frame) - per_frame) - fr.CHUNK_HEADER
        chunk = max(1, min(self.chunk_size, info.max_body - fr.CHUNK_HEADER, fit))
        return chunk, max(window, fr.wire_size(chunk + fr.CHUNK_HEADER))

    def _rate(self) -> float:
        """Bytes per second on the wire: nominal (8N1 UART; USB: about 1 MB/s), or what this
        session measured when the line turned out slower (timeouts then wait long enough
        instead of resending what the board has not read yet)."""
        nominal = (self.info.baud / 10) if self.info.baud else 1_000_000
        measured = self.stats.measured_rate
        return nominal if measured is None else min(nominal, measured)

    def _ack_timeout(self, backoff: int) -> float:
        _, window = self._limits()
        base = 0.25 + 2 * window / self._rate() + 2 * self._max_infer_s
        # Never more than twice --timeout, whatever the board reported.
        return min(base * (2 ** min(backoff, 4)), max(self.timeout / 2, min(base, 2 * self.timeout)))

    def _stall_limit(self) -> float:
        """Seconds without a finished image before giving up: the configured no-progress
        deadline plus the time one image takes on the wire."""
        stall = self.limits.stall_timeout
        if stall is None:
            stall = 2 * self.timeout
        return stall + self.info.input_bytes / self._rate()

    def _gave_up(self, why: str, done: int, resets: int) -> DeviceTimeout:
        so_far = f"{done} image(s) finished before that, " if done else ""
        return DeviceTimeout(
            f"board on {self.name} answered the handshake but {why} ({so_far}"
            f"{resets} re-handshake(s), {self.stats.timeouts} timeout(s))",
            "reset the board and check its serial output; for a board that is merely slow raise "
            "--stall-timeout (FACEMASK_EDGE_STALL_TIMEOUT) or --timeout")

    def _stream(self, source, on_result, stop) -> None:
        st = self.stats
        expected = self.info.input_bytes
        slots = self._slots
        # Wire bytes of chunk frames the board has not answered yet, by frame number: what may
        # still sit in its receive buffer. The board answers every frame in order, so any answer
        # with seq s frees every frame up to s, resent or stale ones included.
        window_q: deque = deque()  # (absolute frame number, wire bytes)
        inflight = 0
        next_id = 0
        exhausted = False
        t0 = self.clock()
        out0 = st.bytes_out
        last_progress = last_rx = t0
        last_done = t0  # the no-progress deadline counts from here: start, or the last result
        done_here = 0
        resets_in_a_row = 0  # re-handshakes since the last finished image
        resets_here = 0
        backoff = 0
        self._max_infer_s = 1.0
        seen_result = False
        window_full_since = None

        def go_back() -> None:
            st.retries += 1
            for s in slots:
                s.sent = s.acked
            self._fence = self._count

        def consumed(seq: int) -> None:
            nonlocal inflight
            last = _seq_abs(self._count, seq)
            while window_q and window_q[0][0] <= last:
                n = window_q.popleft()[1]
                inflight -= n
                st.drained_bytes += n

        def forget_window() -> None:
            nonlocal inflight
            window_q.clear()
            inflight = 0

        def apply_ack(image_id: int, nxt: int) -> bool:
            idx = next((i for i, s in enumerate(slots) if s.id == image_id), None)
            if idx is None:
                return False
            moved = False
            for s in slots[:idx]:  # the board is past these images
                if s.acked < len(s.data):
                    s.acked = s.sent = len(s.data)
                    moved = True
            s = slots[idx]
            if nxt > len(s.data):
                raise ProtocolError(f"board on {self.name} acknowledged {nxt} bytes of a "
                                    f"{len(s.data)}-byte image",
                                    "the firmware does not speak this toolkit's protocol; "
                                    "flash this version's firmware (facemask-edge flash RUN_DIR)")
            if nxt > s.acked:
                s.acked = nxt
                s.sent = max(s.sent, nxt)
                moved = True
            return moved

        def request_results(now: float, force: bool) -> None:
            for i, s in enumerate(slots):
                if s.acked < len(s.data):
                    continue
                later_moved = any(t.acked > 0 for t in slots[i + 1:])
                if force or (later_moved and s.req_at is None):
                    s.req_abs = self._count
                    s.req_at = now
                    st.result_requests += 1
                    self._write(fr.result_req(self._next_seq(), s.id))

        def renumber() -> None:
            nonlocal next_id
            for s in slots:
                s.id = next_id & 0xFFFF
                next_id += 1
                s.sent = s.acked = 0
                s.req_at = s.req_abs = None
            forget_window()

        def take_result(msg: fr.Result) -> bool:
            nonlocal last_done, done_here, resets_in_a_row
            s = next((s for s in slots if s.id == msg.id), None)
            if s is None:
                return False
            if len(msg.scores) != self.info.classes:
                raise ProtocolError(f"board on {self.name} sent {len(msg.scores)} scores, its INFO "
                                    f"said {self.info.classes} classes",
                                    "the firmware does not speak this toolkit's protocol; "
                                    "flash this version's firmware (facemask-edge flash RUN_DIR)")
            slots.remove(s)
            last_done = self.clock()
            done_here += 1
            resets_in_a_row = 0
            st.images += 1
            st.payload_bytes += len(s.data)
            on_result(BoardResult(
                s.key, msg.label, msg.scores, msg.micros, self.name, msg.count,
                fr.COUNTER_NAMES.get(self.info.counter, "?") if msg.count is not None and self.info else "",
                self.info.board if self.info else ""))
            return True

        def rehandshake(why: str) -> None:
            nonlocal last_progress, last_rx, resets_in_a_row, resets_here, backoff
            if resets_in_a_row >= self.limits.max_rehandshakes:
                raise self._gave_up(f"{why}, after {resets_in_a_row} re-handshake(s) in a row without "
                                    "a result", done_here, resets_here)
            resets_in_a_row += 1
            resets_here += 1
            backoff = 0
            st.resets += 1
            self.log(f"{self.name}: {why}; handshaking again and resending {len(slots)} image(s)")

            def other(seq, msg):
                if isinstance(msg, fr.Result):
                    take_result(msg)

            self.handshake(**self._expect, on_other=other)
            renumber()
            last_progress = last_rx = self.clock()

        chunk, window = self._limits()
        while True:
            now = self.clock()
            # -- send while the window has room --
            while True:
                slot = next((s for s in slots if s.sent < len(s.data)), None)
                if slot is None:
                    if (len(slots) < self.MAX_IMAGES_IN_FLIGHT and not exhausted
                            and not (stop is not None and stop.is_set())):
                        item = source.take()
                        if item is None:
                            exhausted = True
                            break
                        key, data = item
                        if len(data) != expected:
                            source.give_back(key, data)
                            raise DeviceError(f"image {key} has {len(data)} bytes, the board takes {expected}")
                        slots.append(_Slot(key, bytes(data), next_id & 0xFFFF))
                        next_id += 1
                        continue
                    break
                n = min(chunk, len(slot.data) - slot.sent)
                wire = fr.wire_size(n + fr.CHUNK_HEADER)
                if inflight and inflight + wire > window:
                    if window_full_since is None:
                        window_full_since = now
                    break
                frame_no = self._count
                frame = fr.chunk(self._next_seq(), slot.id, slot.sent,
                                 slot.data[slot.sent:slot.sent + n])
                self._write(frame)
                st.chunks_sent += 1
                if slot.high > slot.sent:
                    st.chunks_resent += 1
                slot.sent += n
                slot.high = max(slot.high, slot.sent)
                window_q.append((frame_no, len(frame)))
                inflight += len(frame)
            if not slots:
                break
            # -- receive --
            waiting = inflight > 0
            events = self._read_events()
            now, before = self.clock(), now
            if waiting:
                st.busy_s += now - before
            if window_full_since is not None and (events or not inflight):
                st.window_full_s += now - window_full_since
                window_full_since = None
            for seq, msg in events:
                last_rx = now
                consumed(seq)
                if isinstance(msg, fr.Ack):
                    if apply_ack(msg.id, msg.next_offset):
                        last_progress, backoff = now, 0
                elif isinstance(msg, fr.Nak):
                    st.naks += 1
                    if apply_ack(msg.id, msg.next_offset):
                        last_progress, backoff = now, 0
                    if not self._stale(seq):
                        go_back()
                elif isinstance(msg, fr.Result):
                    if take_result(msg):
                        last_progress, backoff = now, 0
                        # Range-checked by the parser; a wait never grows past --timeout from it.
                        infer_s = min(msg.micros / 1e6, self.timeout)
                        if self.info.baud:
                            st.board_stall_s += max(0.0, infer_s - window * 10 / self.info.baud)
                        self._max_infer_s = infer_s if not seen_result else max(self._max_infer_s, infer_s)
                        seen_result = True
                elif isinstance(msg, fr.ErrorMsg):
                    if msg.code == fr.Err.NO_RESULT:
                        s = next((s for s in slots if s.req_abs is not None
                                  and _seq_abs(self._count, seq) == s.req_abs), None)
                        if s is not None:  # the board lost it: send the image again, new id
                            st.resends += 1
                            slots.remove(s)
                            slots.append(_Slot(s.key, s.data, next_id & 0xFFFF))
                            next_id += 1
                        continue
                    if self._stale(seq):
                        continue
                    if msg.code == fr.Err.SEQUENCE:
                        rehandshake("board lost the session (it restarted)")
                        break
                    raise DeviceError(f"board on {self.name} reports: {msg.describe()}",
                                      "see the board's serial output; the model may not fit this board")
            request_results(now, force=False)
            # -- the no-progress deadline: whatever the board answers, images must finish --
            if slots and now - last_done > self._stall_limit():
                raise self._gave_up(f"finished no image for {now - last_done:.1f} s", done_here, resets_here)
            # -- timeouts --
            outstanding = any(s.sent > s.acked for s in slots) or any(s.acked >= len(s.data) for s in slots)
            if outstanding and now - last_progress > self._ack_timeout(backoff):
                st.timeouts += 1
                backoff += 1
                if now - last_rx > self.timeout:
                    rehandshake(f"no answer for {now - last_rx:.1f} s")
                    continue
                if backoff > self.limits.max_retries:
                    rehandshake(f"{backoff - 1} retries without progress")
                    continue
                forget_window()  # after this long the board's buffer has drained or lost it
                if any(s.sent > s.acked for s in slots):
                    go_back()
                request_results(now, force=True)
                last_progress = now
        st.elapsed_s += self.clock() - t0
        st.stream_bytes_out += st.bytes_out - out0

    def camera_frame(self, timeout: float | None = None) -> fr.CameraFrame:
        """Ask the camera loop for its next frame (FRAME_REQ) and wait for the whole of it.

        Works outside a session only (the camera loop is paused in one): call it on a session
        that has not shaken hands, or after :meth:`close`.

        Args:
            timeout: seconds to wait (default: the session's ``timeout``); the request is repeated
                every second, so a lost FRAME piece costs one repeat, not the whole wait.

        Raises:
            DeviceTimeout: no complete frame in time (no camera, or not this protocol).
            DeviceError: the board refused (its model failed, or a session is open).
        """
        if self.info is not None:
            raise DeviceError("camera_frame() inside a session", "close() the session first")
        wait = self.timeout if timeout is None else float(timeout)
        deadline = self.clock() + wait
        assembler = fr.CameraFrameAssembler()
        asked: set[int] = set()
        next_req = self.clock()
        while True:
            now = self.clock()
            if now >= deadline:
                raise DeviceTimeout(f"no camera frame from {self.name} within {wait:g} s",
                                    "is the board's camera loop running? (firmware of this version, "
                                    "camera connected, no other program on the port)")
            if now >= next_req:
                seq = self._next_seq()
                asked.add(seq)
                self._write(fr.frame_req(seq))
                next_req = now + 1.0
            for seq, msg in self._read_events():
                # Outside a session only camera frames come as frames: pieces answering an
                # earlier request (a repeat that armed the board again) are as good as any.
                if isinstance(msg, fr.ErrorMsg) and seq in asked:
                    if msg.code == fr.Err.UNKNOWN_MSG:
                        raise DeviceError(f"{self.name} does not know FRAME_REQ: its firmware predates "
                                          "camera frames (protocol 1.1)",
                                          "flash this version's firmware (facemask-edge flash RUN_DIR)")
                    raise DeviceError(f"{self.name} refused a camera frame: {msg.describe()}",
                                      "the board's model did not load, or a validation session is open")
                frame = assembler.add(msg)
                if frame is not None:
                    return frame

    def close(self, wait: float = 0.5) -> None:
        """End the session (BYE) so the board resumes its camera loop. Never raises."""
        if self.info is None:
            return
        try:
            seq = self._next_seq()
            self._write(fr.bye(seq))
            deadline = self.clock() + wait
            while self.clock() < deadline:
                if any(isinstance(m, fr.ByeAck) for _, m in self._read_events()):
                    break
        except Exception:
            pass
        self.info = None
