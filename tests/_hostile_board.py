"""Hostile boards on real pseudo-terminals: a scripted peer that answers the host's frames.

A :class:`ScriptedBoard` owns the master side of a pty; the host opens the slave path like any
serial port. Each complete frame from the host goes to a script, which returns the bytes the
"board" answers (or nothing). Scripts here model boards that misbehave in the ways issue 12
found: silent after the handshake, acknowledging images the host never sent, reporting absurd
numbers, or sending a malformed greeting.
"""

from __future__ import annotations

import os
import pty
import select
import threading
import time
import tty
from typing import Callable

from facemask_edge.device import framing as fr
from facemask_edge.device.board import DeviceInfo, PyBoardProtocol

Script = Callable[[fr.Frame], bytes]


class ScriptedBoard:
    """A board on a pty that answers with ``script(frame) -> bytes``.

    Attributes:
        path: the port to open.
        events: ``(monotonic time, message type)`` of every frame the host sent.
    """

    def __init__(self, script: Script):
        self.script = script
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.events: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="scripted-board")
        self._thread.start()

    def _run(self) -> None:
        reader = fr.FrameReader()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self.master, 65536)
            except OSError:
                time.sleep(0.02)
                continue
            for ev in reader.feed(data):
                if isinstance(ev, fr.Frame):
                    self.events.append((time.monotonic(), ev.type))
                    answer = self.script(ev)
                    if answer:
                        try:
                            os.write(self.master, answer)
                        except OSError:
                            pass

    def first(self, msg_type: int) -> float | None:
        """When the host first sent a frame of this type."""
        return next((t for t, k in self.events if k == msg_type), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "ScriptedBoard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def info_for(sha256: str, size: int, channels: int = 3, classes: int = 2, **changes) -> fr.Info:
    """An INFO a run's model would pass the handshake with (fields overridable)."""
    fields = dict(status=0, version=fr.PROTOCOL_VERSION, max_body=fr.MAX_BODY, rx_window=fr.RX_WINDOW,
                  baud=0, width=size, height=size, channels=channels, classes=classes,
                  arena_bytes=1000, free_ram_bytes=2000, board="hostile", firmware="0.0.0",
                  model_sha256=sha256)
    fields.update(changes)
    return fr.Info(**fields)


def silent_after_hello(info: fr.Info) -> Script:
    """Answers HELLO with INFO, then ignores every image byte."""
    def script(frame: fr.Frame) -> bytes:
        return fr.encode_info(frame.seq, info) if frame.type == fr.Msg.HELLO else b""
    return script


def acks_unknown_images(info: fr.Info) -> Script:
    """Answers HELLO, then acknowledges every chunk and request as if for an image the host
    never sent: always talking, never finishing anything."""
    def script(frame: fr.Frame) -> bytes:
        if frame.type == fr.Msg.HELLO:
            return fr.encode_info(frame.seq, info)
        if frame.type in (fr.Msg.CHUNK, fr.Msg.RESULT_REQ):
            image_id = int.from_bytes(frame.body[:2], "little") if len(frame.body) >= 2 else 0
            return fr.encode_ack(frame.seq, image_id ^ 0x5A5A, 6)
        return b""
    return script


def real_board_then(info: fr.Info, micros: int, images: int | None = None) -> Script:
    """The firmware's protocol (Python twin) with a stub model that reports ``micros``; after
    ``images`` results it goes silent (the board hangs)."""
    out: list[bytes] = []
    dev = DeviceInfo(info.board, info.firmware, info.model_sha256, info.width, info.height,
                     info.channels, info.classes)

    def infer(data: bytes):
        return 0, [len(data) % 100 - k for k in range(info.classes)], micros

    engine = PyBoardProtocol(dev, out.append, infer)

    def script(frame: fr.Frame) -> bytes:
        if images is not None and engine.images >= images:
            return b""
        engine.feed(fr.encode_frame(frame.type, frame.seq, frame.body))
        answer = b"".join(out)
        out.clear()
        return answer
    return script


def greeting(body: bytes) -> Script:
    """Answers HELLO with an INFO frame of this body (good CRC, any content)."""
    def script(frame: fr.Frame) -> bytes:
        return fr.encode_frame(fr.Msg.INFO, frame.seq, body) if frame.type == fr.Msg.HELLO else b""
    return script
