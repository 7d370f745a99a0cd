"""A virtual board on a pseudo-terminal: the firmware's protocol code, the model in TFLM.

The simulator is built like the firmware: a receive path that fills a bounded buffer at the
UART's speed (bytes beyond it are lost, as on a UART without flow control), one "MCU" thread that
feeds those bytes to the protocol engine and runs the model synchronously (it reads nothing
meanwhile), and a transmit path paced at the same speed. The protocol engine is
``firmware/common/fe_protocol.c`` itself when a C compiler is available (else its Python twin),
and the model runs in the tflite-micro interpreter with the board's arena budget.

Faults are injected per frame on both directions (drop, corrupt), and once per run (reset after
K images, stall for S seconds after K images).
"""

from __future__ import annotations

import errno
import hashlib
import os
import pty
import select
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facemask_edge.artifacts.tflite import read_tflite
from facemask_edge.boards import Board, get_board
from facemask_edge.device import framing as fr
from facemask_edge.device.board import DeviceInfo, make_engine
from facemask_edge.errors import BudgetError, FacemaskError, ModelError

__all__ = ["Faults", "BoardSimulator", "SimStats", "board_budget", "load_camera_frames"]


@dataclass
class Faults:
    """Faults to inject: ``drop=P,corrupt=P,reset-after=K,stall=S[@K],seed=N``.

    ``drop``/``corrupt``: probability per frame, each direction. ``reset-after=K``: the board
    restarts once, after its K-th image (it forgets the session and loses buffered bytes).
    ``stall=S@K``: after the K-th image (default 1) the board stops reading for S seconds.
    """

    drop: float = 0.0
    corrupt: float = 0.0
    reset_after: int | None = None
    stall: float = 0.0
    stall_after: int = 1
    seed: int = 0

    @classmethod
    def parse(cls, text: str | None) -> "Faults":
        f = cls()
        if not text:
            return f
        valid = "drop=P, corrupt=P, reset-after=K, stall=S[@K], seed=N"
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            key = key.strip().replace("_", "-")
            try:
                if not sep:
                    raise ValueError
                if key in ("drop", "corrupt"):
                    p = float(value)
                    if not 0 <= p < 1:
                        raise ValueError
                    setattr(f, key, p)
                elif key == "reset-after":
                    f.reset_after = int(value)
                    if f.reset_after < 1:
                        raise ValueError
                elif key == "stall":
                    s, _, k = value.partition("@")
                    f.stall = float(s)
                    f.stall_after = int(k) if k else 1
                    if f.stall < 0 or f.stall_after < 1:
                        raise ValueError
                elif key == "seed":
                    f.seed = int(value)
                else:
                    raise FacemaskError(f"unknown fault {key!r}", f"use {valid}")
            except ValueError:
                raise FacemaskError(f"bad fault {part!r}", f"use {valid} (0 <= P < 1)") from None
        return f

    def describe(self) -> str:
        parts = []
        if self.drop:
            parts.append(f"drop={self.drop:g}")
        if self.corrupt:
            parts.append(f"corrupt={self.corrupt:g}")
        if self.reset_after:
            parts.append(f"reset-after={self.reset_after}")
        if self.stall:
            parts.append(f"stall={self.stall:g}@{self.stall_after}")
        return ",".join(parts) or "none"


@dataclass
class SimStats:
    images: int = 0
    camera_frames: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped_in: int = 0
    dropped_out: int = 0
    corrupted_in: int = 0
    corrupted_out: int = 0
    overrun_bytes: int = 0
    resets: int = 0
    stalls: int = 0
    busy_s: float = 0.0  # time the MCU spent running the model

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def board_budget(board: str | Board, uart: bool) -> int:
    """Arena bytes a board can give the model: RAM minus what the firmware takes first
    (:attr:`Board.arena_ram_bytes`) and, on a UART link, the receive window."""
    ram = get_board(board).arena_ram_bytes
    if uart:
        ram -= fr.RX_WINDOW + 256
    return ram


def load_camera_frames(path: str | Path, limit: int = 500) -> list[np.ndarray]:
    """The simulated camera's frames: every image of a folder (sorted, subfolders too) or one file.

    Args:
        path: a folder of images (JPEG, PNG, WEBP, BMP, GIF) or a single image.
        limit: read at most this many (they are kept decoded in memory).

    Raises:
        DataError: the path does not exist or holds no image that decodes.
    """
    from facemask_edge.data.images import decode_image
    from facemask_edge.errors import DataError

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist", "pass a folder of images or one image file")
    exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in exts)
    frames = []
    for f in files[:limit]:
        try:
            frames.append(decode_image(f).rgb)
        except (ValueError, OSError):
            continue  # a broken file is one frame less, not a dead camera
    if not frames:
        raise DataError(f"no image in {path} decodes", "pass a folder of JPEG/PNG/WEBP/BMP images")
    return frames


class _Model:
    """The model in tflite-micro, as the firmware runs it."""

    def __init__(self, model: bytes, arena: int):
        from tflite_micro.python.tflite_micro import runtime

        self.error = 0
        self.message = ""
        try:
            self.interp = runtime.Interpreter.from_bytes(model, arena_size=arena)
        except RuntimeError as exc:
            self.interp = None
            text = str(exc)
            self.error = fr.Err.ALLOCATE if "allocate" in text.lower() else fr.Err.MODEL_INIT
            self.message = text.splitlines()[-1] if text else ""
            return
        d = self.interp.get_input_details(0)
        self.shape = tuple(int(v) for v in d["shape"])
        out = self.interp.get_output_details(0)
        self.classes = int(np.prod(out["shape"]))

    def __call__(self, data: bytes) -> tuple[int, list[int], int]:
        x = np.frombuffer(data, dtype=np.int8).reshape(self.shape)
        t = time.perf_counter_ns()
        try:
            self.interp.set_input(x, 0)
            self.interp.invoke()
        except RuntimeError:
            return fr.Err.INVOKE, [0] * self.classes, 0
        us = (time.perf_counter_ns() - t) // 1000
        return 0, [int(v) for v in self.interp.get_output(0).reshape(-1)], int(us)


class _Pacer:
    """Bytes at a UART's speed: each byte takes 10 bit times (8N1)."""

    def __init__(self, baud: int):
        self.byte_s = 10.0 / baud if baud else 0.0
        self.free_at = 0.0

    def wait(self, n: int, since: float, back_to_back: bool = False) -> None:
        """Sleep until ``n`` bytes that started arriving at ``since`` are in. ``back_to_back``:
        they were already waiting when the previous bytes were in, so the line had no gap (a
        late wake-up of this thread must not stretch the line)."""
        if not self.byte_s:
            return
        start = self.free_at if back_to_back and self.free_at else max(since, self.free_at)
        self.free_at = start + n * self.byte_s
        delay = self.free_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class BoardSimulator:
    """A simulated board on a pty.

    Args:
        model: the int8 ``.tflite`` bytes.
        card: the run's ``model_card.json`` content (labels, input size and colour, arena).
        board: a registered board name or :class:`facemask_edge.boards.Board` to take the name
            and RAM/flash limits from (``None``: a generous "sim" board).
        baud: UART speed to pace both directions at (0: as fast as the pty goes, flow-controlled
            like USB CDC).
        faults: :class:`Faults` to inject.
        engine: ``"auto"`` (the firmware C code when it compiles), ``"c"`` or ``"python"``.
        camera_every: seconds between camera-loop predictions outside a session (0: off).
        camera_frames: uint8 RGB frames the "camera" cycles through (default: random noise).
    """

    def __init__(self, model: bytes, card: dict, board=None, baud: int = 0, faults: Faults | None = None,
                 engine: str = "auto", camera_every: float = 0.0, camera_frames=None):
        # TFLM trusts every offset in a flatbuffer and runs in this process: check it first.
        read_tflite(model, name="the simulated board's model")
        self.model_bytes = model
        self.card = card
        self.board = board = get_board(board) if board is not None else None
        self.baud = int(baud)
        self.faults = faults or Faults()
        self.engine_kind = engine
        self.camera_every = camera_every
        self.camera_frames = camera_frames
        self.stats = SimStats()
        # One fault stream per direction: the receiver and transmitter threads never draw from
        # the same generator, so a seed gives the same faults whatever the thread timing.
        self._rng = np.random.RandomState(self.faults.seed)
        self._tx_rng = np.random.RandomState(self.faults.seed + 1)
        self._rx = bytearray()
        self._rx_cond = threading.Condition()
        self._rx_limit = fr.RX_WINDOW + 256 if self.baud else 4 * fr.RX_WINDOW
        self._tx_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stall_done = False
        self._reset_done = False
        self._in_camera = False
        self.path: str | None = None
        self.labels = list(card.get("labels") or [])
        inp = card.get("input", {})
        shape = inp.get("shape") or [1, inp.get("size", 96), inp.get("size", 96), 3]
        self.height, self.width, self.channels = int(shape[1]), int(shape[2]), int(shape[3])
        self.color = inp.get("color", "rgb" if self.channels == 3 else "grayscale")
        self.sha256 = hashlib.sha256(model).hexdigest()
        if board is not None:
            flash = board.model_flash_bytes
            if len(model) > flash:
                raise BudgetError(f"the model ({len(model) // 1024} KiB) does not fit {board.name}'s "
                                  f"flash ({flash // 1024} KiB left for it)",
                                  "the firmware could not be built; choose a smaller model")
            self.arena_budget = board_budget(board, uart=bool(self.baud))
            self.board_name = board.name
        else:
            self.arena_budget = max(int(card.get("arena_bytes") or 0) * 2, 10 * len(model), 256 * 1024)
            self.board_name = "sim"
        classes = len(self.labels) or int(card["output"]["shape"][-1])
        if not 1 <= classes <= fr.MAX_CLASSES:
            # The firmware would not build (FE_NUM_CLASSES > FE_MAX_CLASSES): no board to simulate.
            raise ModelError(f"the model has {classes} classes; the firmware's results carry at most "
                             f"{fr.MAX_CLASSES} (FE_MAX_CLASSES)",
                             f"train with at most {fr.MAX_CLASSES} classes")
        self.model = _Model(model, self.arena_budget)
        arena_used = int(card.get("arena_bytes") or 0)
        self.info = DeviceInfo(
            board=self.board_name, firmware_version=f"board-sim {_version()}",
            model_sha256=self.sha256, input_width=self.width, input_height=self.height,
            input_channels=self.channels, num_classes=classes,
            arena_bytes=arena_used if not self.model.error else 0,
            free_ram_bytes=max(0, self.arena_budget - arena_used))
        self.engine, self.engine_used = self._new_engine()

    # ---- engine ----

    def _infer(self, data: bytes):
        t = time.monotonic()
        code, scores, us = self.model(data)
        self.stats.busy_s += time.monotonic() - t
        if code == 0 and not self._in_camera:  # camera frames are not validation images
            self.stats.images += 1
        return code, scores, us

    def _new_engine(self):
        engine, kind = make_engine(self.engine_kind, self.info, self._send_frame, self._infer)
        engine.set_baud(self.baud)
        if self.model.error:
            engine.set_error(self.model.error)
        return engine, kind

    # ---- pty and threads ----

    def start(self) -> str:
        """Open the pty, start the board, and return the port path to connect to."""
        master, slave = pty.openpty()
        tty.setraw(slave)
        self._master, self._slave = master, slave
        os.set_blocking(master, False)
        self.path = os.ttyname(slave)
        for target, name in ((self._rx_loop, "sim-rx"), (self._mcu_loop, "sim-mcu")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._boot_banner()
        return self.path

    def _boot_banner(self) -> None:
        """What the firmware prints at start-up (the sketches' banner, same fields)."""
        d = self.info
        self._send_text(f"facemask-edge {d.firmware_version} board={d.board} model={self.sha256[:12]} "
                        f"input={d.input_width}x{d.input_height}x{d.input_channels} "
                        f"arena_used={d.arena_bytes}/{self.arena_budget} free_ram={d.free_ram_bytes}")
        if self.model.error:
            self._send_text(f"model init failed: error {self.model.error}")

    def stop(self) -> None:
        self._stop.set()
        with self._rx_cond:
            self._rx_cond.notify_all()
        for t in self._threads:
            t.join(timeout=2)
        for fd in (getattr(self, "_master", None), getattr(self, "_slave", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    def __enter__(self) -> "BoardSimulator":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _fate(self, rng) -> str:
        r = rng.random_sample()
        if r < self.faults.drop:
            return "drop"
        if r < self.faults.drop + self.faults.corrupt:
            return "corrupt"
        return "ok"

    def _corrupt(self, seg: bytes, rng) -> bytes:
        b = bytearray(seg)
        i = rng.randint(len(b))
        b[i] ^= int(rng.randint(1, 256))
        return bytes(b)

    def _rx_loop(self) -> None:
        """The UART receiver: pace, inject faults per frame, fill the bounded buffer."""
        pacer = _Pacer(self.baud)
        pending = bytearray()  # bytes of the frame still arriving
        faulty = self.faults.drop or self.faults.corrupt
        waiting = False  # bytes were already waiting when the last block was in
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self._master], [], [], 0 if waiting else 0.05)
            except (OSError, ValueError):
                return
            if not r:
                waiting = False
                continue
            back_to_back = waiting
            try:
                data = os.read(self._master, 512 if self.baud else 65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:  # no host has the port open
                    time.sleep(0.05)
                    continue
                return
            pacer.wait(len(data), time.monotonic(), back_to_back)
            waiting = True  # look again at once: more bytes mean the line did not pause
            self.stats.bytes_in += len(data)
            if not faulty:
                self._deliver(data)
                continue
            pending += data
            out = bytearray()
            while True:
                z = pending.find(0)
                if z < 0:
                    break
                seg = bytes(pending[:z])
                del pending[:z + 1]
                if seg:
                    fate = self._fate(self._rng)
                    if fate == "drop":
                        self.stats.dropped_in += 1
                        seg = b""
                    elif fate == "corrupt":
                        self.stats.corrupted_in += 1
                        seg = self._corrupt(seg, self._rng)
                out += seg + b"\x00"
            if len(pending) > 2 * fr.MAX_BODY + 64:  # not frames: pass through
                out += pending
                pending.clear()
            if out:
                self._deliver(bytes(out))

    def _deliver(self, data: bytes) -> None:
        with self._rx_cond:
            if self.baud:
                room = self._rx_limit - len(self._rx)
                if len(data) > room:  # UART overrun: the bytes that do not fit are lost
                    self.stats.overrun_bytes += len(data) - max(room, 0)
                    data = data[:max(room, 0)]
                self._rx += data
            else:  # USB-like: the host waits until there is room
                while len(self._rx) + len(data) > self._rx_limit and not self._stop.is_set():
                    self._rx_cond.wait(0.05)
                self._rx += data
            self._rx_cond.notify_all()

    def _mcu_loop(self) -> None:
        next_camera = time.monotonic() + self.camera_every if self.camera_every else None
        frame_no = 0
        while not self._stop.is_set():
            with self._rx_cond:
                if not self._rx:
                    wait = 0.05 if next_camera is None else max(0.0, min(0.05, next_camera - time.monotonic()))
                    self._rx_cond.wait(wait)
                data = bytes(self._rx)
                self._rx.clear()
                self._rx_cond.notify_all()
            if data:
                try:
                    self.engine.feed(data)
                except Exception as exc:  # a bug in the simulator must not hang the host
                    self._send_text(f"board-sim error: {type(exc).__name__}: {exc}")
            self._after_images()
            if next_camera is not None and time.monotonic() >= next_camera:
                next_camera = time.monotonic() + self.camera_every
                if not self.engine.in_session():
                    self._camera_step(frame_no)
                    frame_no += 1

    def _after_images(self) -> None:
        f = self.faults
        if f.reset_after and not self._reset_done and self.stats.images >= f.reset_after:
            self._reset_done = True
            self.stats.resets += 1
            with self._rx_cond:
                self._rx.clear()  # the receive buffer dies with the reset
            self.engine, _ = self._new_engine()
            self._send_text(f"board-sim: reset after {self.stats.images} images (fault injection)")
            self._boot_banner()
        if f.stall and not self._stall_done and self.stats.images >= f.stall_after:
            self._stall_done = True
            self.stats.stalls += 1
            self._stop.wait(f.stall)

    def _camera_step(self, n: int) -> None:
        from facemask_edge.data.preprocess import (device_preprocess, rgb565_to_rgb888,
                                                   rgb888_to_rgb565, to_int8)

        w, h = (self.board.frame[0], self.board.frame[1]) if self.board is not None else (160, 120)
        if self.camera_frames is not None and len(self.camera_frames):
            rgb = np.asarray(self.camera_frames[n % len(self.camera_frames)], dtype=np.uint8)
        else:
            rgb = np.random.RandomState(n).randint(0, 256, (h, w, 3)).astype(np.uint8)
        # The camera delivers RGB565: the firmware expands it, then preprocesses.
        raw = rgb888_to_rgb565(rgb)
        frame = rgb565_to_rgb888(raw, rgb.shape[1], rgb.shape[0])
        x = to_int8(device_preprocess(frame, self.height, self.color))
        if self.model.error:
            return
        # Through the protocol engine, as the firmware does: it sends the frame to a host that
        # asked (FRAME_REQ) and costs nothing more when nobody did.
        self._in_camera = True
        try:
            code, scores, us = self.engine.camera(x.tobytes())
        finally:
            self._in_camera = False
        if code:
            return
        self.stats.camera_frames += 1
        k = len(scores)
        idx = max(range(k), key=lambda i: (scores[i], -i))
        out = self.card.get("output", {})
        scale, zp = float(out.get("scale", 1 / 256)), int(out.get("zero_point", -128))
        conf = int(min(100, max(0, round(100 * (scores[idx] - zp) * scale))))
        label = self.labels[idx] if idx < len(self.labels) else str(idx)
        ms = int(time.monotonic() * 1000) & 0xFFFFFFFF
        self._send_text(f"PRED ms={ms} idx={idx} label={label} conf={conf} us={us} "
                        f"scores={','.join(str(s) for s in scores)}")

    # ---- transmit ----

    def _send_text(self, line: str) -> None:
        self._write((line + "\r\n").encode("ascii", "replace"), text=True)

    def _send_frame(self, data: bytes) -> None:
        if self.faults.drop or self.faults.corrupt:
            fate = self._fate(self._tx_rng)
            if fate == "drop":
                self.stats.dropped_out += 1
                return
            if fate == "corrupt":
                self.stats.corrupted_out += 1
                data = b"\x00" + self._corrupt(data[1:-1], self._tx_rng) + b"\x00"
        self._write(data)

    def _write(self, data: bytes, text: bool = False) -> None:
        """Transmit at the UART's speed. Called from the MCU thread: like a blocking
        Serial.write, it returns when the bytes are on the wire."""
        master = self._master
        if master is None:
            return
        with self._tx_lock:
            pacer = getattr(self, "_tx_pacer", None) or _Pacer(self.baud)
            self._tx_pacer = pacer
            pacer.wait(len(data), time.monotonic())
            view = memoryview(data)
            deadline = time.monotonic() + (0.2 if text else 2.0)
            while view and not self._stop.is_set():
                try:
                    n = os.write(master, view)
                    view = view[n:]
                    self.stats.bytes_out += n
                except BlockingIOError:
                    # Nobody reads the port: a UART sends into the void; drop after a while.
                    if time.monotonic() > deadline:
                        return
                    select.select([], [master], [], 0.05)
                except OSError:
                    return


def _version() -> str:
    from facemask_edge import __version__

    return __version__
