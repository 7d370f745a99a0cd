"""Serial ports by URL, and finding a board when no port is given.

``open_port`` accepts what ``serial.serial_for_url`` does (a device path such as ``/dev/ttyACM0``
or a pty from ``board-sim``, ``socket://host:port``, ``rfc2217://host:port``, ``loop://``) and an
already-open port object, so tests and callers can pass their own.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from facemask_edge.boards import usb_kind
from facemask_edge.errors import DeviceError

__all__ = ["open_port", "PortCandidate", "list_candidates", "choose_port", "DEFAULT_BAUD"]

DEFAULT_BAUD = 921600


def open_port(port, baud: int = DEFAULT_BAUD, timeout: float = 0.02, write_timeout: float = 5.0):
    """Open a serial port by URL or path (or return an already-open port object).

    Args:
        port: a URL/path for ``serial.serial_for_url``, or an object with ``read``/``write``.
        baud: line speed (ignored by USB CDC and ptys, used by UART bridges).
        timeout: read timeout in seconds (the session polls with it).
        write_timeout: a write that blocks longer than this fails.

    Raises:
        DeviceError: the port does not exist, is busy, or the URL is malformed.
    """
    if not isinstance(port, (str, os.PathLike)):
        return port
    import serial

    url = os.fspath(port)
    if "://" not in url and not os.path.exists(url):
        raise DeviceError(f"port {url} does not exist",
                          "check the cable, or pass --port (list ports: python -m serial.tools.list_ports)")
    try:
        return serial.serial_for_url(url, baudrate=baud, timeout=timeout,
                                     write_timeout=write_timeout, exclusive=_exclusive(url))
    except serial.SerialException as exc:
        err = getattr(exc, "errno", None)
        text = str(exc)
        if err == errno.EBUSY or "busy" in text.lower() or "lock" in text.lower():
            raise DeviceError(f"port {url} is busy", "close the other program using it "
                              "(serial monitor, another validate)") from None
        if err == errno.EACCES or "permission" in text.lower():
            raise DeviceError(f"no permission to open {url}",
                              "add yourself to the dialout group, then log in again") from None
        if err == errno.ENOENT or "no such file" in text.lower():
            raise DeviceError(f"port {url} does not exist", "check the cable and the port name") from None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise DeviceError(f"cannot open {url}: {first}",
                          "URLs look like /dev/ttyACM0, COM3, socket://host:port, rfc2217://host:port") from None
    except (ValueError, OSError) as exc:
        raise DeviceError(f"cannot open {url}: {exc}",
                          "URLs look like /dev/ttyACM0, COM3, socket://host:port, rfc2217://host:port") from None


def _exclusive(url: str):
    # Exclusive locking only makes sense for device files; URL handlers reject the option.
    return True if "://" not in url and os.name == "posix" else None


@dataclass(frozen=True)
class PortCandidate:
    """A serial port that looks like one of our boards."""

    device: str
    vid: int | None
    pid: int | None
    description: str
    kind: str

    def describe(self) -> str:
        ids = f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else "?"
        return f"{self.device} ({self.kind}, USB {ids}, {self.description})"


def _kind(vid, pid) -> str | None:
    # The board registry's USB ids (read now, so a board registered later is found too).
    return usb_kind(vid, pid)


def list_candidates(ports=None) -> list[PortCandidate]:
    """Ports whose USB VID/PID belongs to a supported board or a USB-serial bridge.

    Args:
        ports: ``serial.tools.list_ports.comports()`` entries (default: the system's).
    """
    if ports is None:
        from serial.tools import list_ports

        ports = list_ports.comports()
    out = []
    for p in ports:
        kind = _kind(getattr(p, "vid", None), getattr(p, "pid", None))
        if kind:
            out.append(PortCandidate(p.device, p.vid, p.pid, getattr(p, "description", "") or "", kind))
    return sorted(out, key=lambda c: c.device)


def choose_port(ports=None) -> str:
    """The one connected board's port.

    Raises:
        DeviceError: no board found, or several (they are listed).
    """
    cands = list_candidates(ports)
    if len(cands) == 1:
        return cands[0].device
    if not cands:
        raise DeviceError("no board found on USB (no Arduino, Espressif, CH340 or CP210x device)",
                          "plug the board in, or pass --port (a simulator: facemask-edge board-sim RUN_DIR)")
    listing = "; ".join(c.describe() for c in cands)
    raise DeviceError(f"{len(cands)} possible boards: {listing}", "pick one with --port")
