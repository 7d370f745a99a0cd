"""Run the emulator firmware under ``qemu-system-arm -M mps2-an386`` with its UART on a pty.

Why a pty: ``validate --port /dev/pts/N`` and ``monitor`` then talk to the emulated board exactly
as to a USB board or to ``board-sim``. QEMU's ``-icount shift=0`` makes every guest instruction
one virtual nanosecond, so the board's 25 MHz timer counts instructions exactly (40 per tick)
and every figure it reports is repeatable. The second UART goes to a file: the board writes its
boot measurements there ("FE-EMU ..." lines), away from the protocol's port.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from facemask_edge.errors import DeviceError, DeviceTimeout, ToolMissing

__all__ = ["QEMU", "BootReport", "Emulator", "parse_log", "qemu_command"]

QEMU = "qemu-system-arm"
_PTY = re.compile(r"char device redirected to (\S+) \(label serial0\)")


@dataclass
class BootReport:
    """What the board measured at boot (its UART1 log)."""

    status: int | None = None
    arena_used: int = 0
    free_ram: int = 0
    preprocess: int | None = None  # instructions for one camera frame
    frame: str = ""
    invoke: int | None = None  # instructions of the boot inference
    ops: list[tuple[str, int]] = field(default_factory=list)  # (op name, instructions), execution order
    fault: str | None = None
    ready: bool = False


def parse_log(text: str) -> BootReport:
    """Parse the ``FE-EMU`` lines of the board's log UART."""
    r = BootReport()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != "FE-EMU":
            continue
        kind = parts[1]
        try:
            if kind == "boot":
                kv = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
                r.status, r.arena_used, r.free_ram = int(kv["status"]), int(kv["arena_used"]), int(kv["free_ram"])
            elif kind == "preprocess":
                r.frame, r.preprocess = " ".join(parts[2:4]), int(parts[4])
            elif kind == "invoke":
                r.invoke = int(parts[2]) if parts[3] == "ok" else None
            elif kind == "op":
                r.ops.append((parts[3], int(parts[4])))
            elif kind == "fault":
                r.fault = " ".join(parts[2:])
            elif kind == "ready":
                r.ready = True
        except (KeyError, IndexError, ValueError):
            continue  # a torn line: the board is still writing it
    return r


def qemu_command(elf: Path, log: Path) -> list[str]:
    """The QEMU command line: Cortex-M4F, exact instruction counting, UART0 on a pty."""
    return [QEMU, "-M", "mps2-an386", "-cpu", "cortex-m4", "-icount", "shift=0", "-nographic",
            "-monitor", "none", "-serial", "pty", "-serial", f"file:{log}", "-kernel", str(elf)]


class Emulator:
    """A running QEMU with the firmware. Use as a context manager, or ``start()`` / ``stop()``.

    Args:
        elf: the firmware (``build_firmware``).
        log: where the board's log UART is written.
    """

    def __init__(self, elf: Path, log: Path):
        self.elf = Path(elf)
        self.log = Path(log)
        self.proc: subprocess.Popen | None = None
        self.port: str | None = None
        self._stderr: list[str] = []

    def start(self, timeout: float = 120.0) -> str:
        """Start QEMU, wait for the board to finish booting, return the pty path.

        Raises:
            ToolMissing: no qemu-system-arm.
            DeviceError: QEMU exited or the board faulted.
            DeviceTimeout: the board did not boot in time.
        """
        if shutil.which(QEMU) is None:
            raise ToolMissing(f"{QEMU} not found", "install it: apt-get install qemu-system-arm")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        # QEMU names the pty on stdout ("char device redirected to ..."), errors on stderr: read both.
        self.proc = subprocess.Popen(qemu_command(self.elf, self.log), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        found = threading.Event()

        def read_stderr() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self._stderr.append(line.rstrip())
                m = _PTY.search(line)
                if m:
                    self.port = m.group(1)
                    found.set()

        threading.Thread(target=read_stderr, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DeviceError(f"{QEMU} exited with status {self.proc.returncode}: "
                                  + " ".join(self._stderr[-3:])[:300], "check the firmware image")
            report = parse_log(self.log.read_text(errors="replace"))
            if report.fault:
                self.stop()
                raise DeviceError(f"the emulated board faulted at boot: {report.fault}",
                                  "the model may not fit the 256 KB RAM / stack; see the firmware log")
            if found.is_set() and report.ready:
                return self.port  # type: ignore[return-value]
            time.sleep(0.05)
        self.stop()
        raise DeviceTimeout(f"the emulated board did not boot within {timeout:.0f} s", f"see {self.log}")

    def boot_report(self) -> BootReport:
        return parse_log(self.log.read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "Emulator":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
