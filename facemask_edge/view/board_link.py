"""The web app's one connection to a board: camera frames on request, one image on demand.

A background thread owns the port. Between requests from the pages it asks the board's camera
loop for its next frame (FRAME_REQ, ``firmware/PROTOCOL.md``), so the live page shows what the
model saw; when the try-it page wants the board's answer for a photo, the same thread opens a
validation session (HELLO), streams the one image, and ends the session (BYE), so the camera
loop and the upload never fight over the port. A board that stops answering, or a port that
disappears, is "board disconnected"; the thread keeps trying to reopen the port, so a board that
comes back (a replugged cable, a restarted ``board-sim --link``) is picked up again.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from facemask_edge.device import framing as fr
from facemask_edge.errors import DeviceError, FacemaskError, ModelMismatch

__all__ = ["BoardLink", "LiveFrame"]


@dataclass
class LiveFrame:
    """One camera frame as the page shows it."""

    n: int  # counts frames received by this server (the board's own number wraps at 65536)
    frame: fr.CameraFrame
    received: float = field(default_factory=time.time)


class BoardLink:
    """Keep a board on ``port`` connected and collect its camera frames.

    Args:
        port: serial port path or URL (as ``validate --port``).
        baud: UART speed.
        frame_timeout: seconds without a complete frame before the board counts as disconnected.
        expect_sha256: the run's model hash; the board's answers to uploads are refused when it
            runs another model.
        history: frames kept for the page.
    """

    def __init__(self, port: str, baud: int = 921600, frame_timeout: float = 2.0,
                 expect_sha256: str | None = None, history: int = 60):
        self.port = port
        self.baud = baud
        self.frame_timeout = frame_timeout
        self.expect_sha256 = expect_sha256
        self.frames: deque[LiveFrame] = deque(maxlen=history)
        self.status = "connecting"
        self.message = f"opening {port}"
        self.connected_since: float | None = None
        self.pred_lines = 0
        self._count = 0
        self._lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="board-link", daemon=True)

    def start(self) -> "BoardLink":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # ---- what the pages read ----

    def snapshot(self, after: int = 0) -> dict:
        """Status and the frames newer than ``after`` (a page polls with its last ``n``)."""
        with self._lock:
            return {"status": self.status, "message": self.message, "port": self.port,
                    "received": self._count, "pred_lines": self.pred_lines,
                    "frames": [f for f in self.frames if f.n > after]}

    def classify(self, data: bytes, timeout: float = 20.0):
        """The board's answer for one preprocessed int8 image (a :class:`BoardResult`).

        Raises:
            DeviceError: the board is disconnected, refuses, or does not answer in time.
        """
        if self.status != "connected":
            raise DeviceError(f"board disconnected ({self.message})", "check the cable, or start board-sim")
        job: Future = Future()
        self._jobs.put((data, job))
        try:
            return job.result(timeout=timeout)
        except TimeoutError:
            raise DeviceError("the board did not answer in time", "is it still connected?") from None

    # ---- the thread ----

    def _set(self, status: str, message: str) -> None:
        with self._lock:
            if status == "connected" and self.status != "connected":
                self.connected_since = time.time()
            self.status, self.message = status, message

    def _on_text(self, line: str) -> None:
        if line.startswith("PRED "):
            with self._lock:
                self.pred_lines += 1

    def _run(self) -> None:
        from facemask_edge.device.session import BoardSession
        from facemask_edge.device.transport import open_port

        while not self._stop.is_set():
            try:
                ser = open_port(self.port, baud=self.baud, timeout=0.02)
            except FacemaskError as exc:
                self._set("disconnected", exc.message)
                self._fail_jobs(exc)
                self._stop.wait(0.3)
                continue
            session = BoardSession(ser, name=self.port, timeout=self.frame_timeout)
            session.on_text = self._on_text
            try:
                while not self._stop.is_set():
                    self._run_jobs(session)
                    frame = session.camera_frame(timeout=self.frame_timeout)
                    with self._lock:
                        self._count += 1
                        self.frames.append(LiveFrame(self._count, frame))
                    self._set("connected", f"{self.port}: camera frame {frame.frame}")
            except FacemaskError as exc:
                self._set("disconnected", exc.message)
                self._fail_jobs(exc)
            except Exception as exc:  # a bug here must not end the thread: the page shows it
                self._set("disconnected", f"{type(exc).__name__}: {exc}")
                self._fail_jobs(DeviceError(str(exc)))
            finally:
                try:
                    ser.close()
                except Exception:
                    pass
            self._stop.wait(0.2)

    def _run_jobs(self, session) -> None:
        while True:
            try:
                data, job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not job.set_running_or_notify_cancel():
                continue
            try:
                session.handshake(expect_sha256=self.expect_sha256)
                got: list = []
                session.stream([(0, data)], got.append)
                job.set_result(got[0])
            except ModelMismatch as exc:  # the board is fine, it just runs another model
                job.set_exception(exc)
            except FacemaskError as exc:
                job.set_exception(exc)
                raise
            finally:
                session.close()

    def _fail_jobs(self, exc: Exception) -> None:
        while True:
            try:
                _, job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job.set_running_or_notify_cancel():
                job.set_exception(DeviceError(f"board disconnected ({getattr(exc, 'message', exc)})"))
