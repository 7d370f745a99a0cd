"""Every fact about a supported board, in one entry per board.

The profile budgets, the exporter, ``flash`` (arduino-cli core, libraries, FQBN), the board
simulator, the serial-port finder (USB ids), the sweep's per-board budgets, Edge Impulse's
device names and the pipeline's per-board model defaults all read the same :class:`Board`
entry, so a new board is one :func:`register_board` call (plus its sketch folder), and a
changed number cannot disagree with a copy elsewhere. Numbers and their sources are written
down so a user can check them.

A leaf module: it imports nothing from the toolkit but its errors, so the wire, the simulator
and the exporter can all depend on it.

The per-board model defaults stay in ``facemask_edge/defaults.json`` because
``facemask-edge sweep --write-defaults`` rewrites them from a sweep's recommendation (a program
should rewrite JSON, not Python source); :func:`model_defaults` is that file's one reader and
:data:`DEFAULTS_FILE` its one location.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from facemask_edge.errors import FacemaskError

__all__ = ["Board", "BOARDS", "DEFAULTS_FILE", "USB_BRIDGES", "get_board", "board_names",
           "register_board", "model_defaults", "usb_kind", "ESP32_INDEX_URL"]

#: Board manager index of the esp32 core (arduino-cli needs it to install ``esp32:esp32``).
ESP32_INDEX_URL = "https://espressif.github.io/arduino-esp32/package_esp32_index.json"
#: The per-board model defaults, written by ``sweep --write-defaults``, read by :func:`model_defaults`.
DEFAULTS_FILE = Path(__file__).with_name("defaults.json")


@dataclass(frozen=True)
class Board:
    """A target board: its chip and memory, camera, toolchain, USB ids and budgets.

    Attributes:
        name: the ``--board`` value (and the sketch folder's and ``.ino``'s name).
        title: human name.
        mcu: the microcontroller and its core.
        clock_hz: CPU clock.
        ram_bytes: RAM the sketch can use for data (internal SRAM).
        psram_bytes: external PSRAM (0 if none).
        flash_bytes: program flash.
        reserved_ram_bytes: RAM the core, USB/serial stack, camera driver and sketch take
            before the tensor arena and frame buffer (measured on typical sketches, stated).
        reserved_flash_bytes: flash taken by the core, TFLM and the sketch without the model.
        frame: the camera frame the firmware captures: (width, height, bytes per pixel).
        frame_in_psram: the frame buffer lives in PSRAM, not in ``ram_bytes``.
        cycles_per_mac: (low, high) cycles per multiply-accumulate of an int8 MobileNet in TFLM
            with the board's optimized kernels.
        cycles_source: where those numbers come from.
        fqbn: arduino-cli fully qualified board name.
        board_options: arduino-cli ``--board-options`` (``KEY=VALUE``).
        core: the Arduino core (platform id) that builds the sketch.
        core_min: the oldest core version the sketch is written for.
        core_url: the core's board manager index URL (``None``: Arduino's own index).
        arduino_arch: ``architectures=`` of an Arduino library for this board.
        libraries: Library Manager (name, version) pairs the sketch needs besides its core.
        upload_note: what to try when an upload does not find the board.
        usb_ids: (VID, PID or None) pairs that identify the board or its USB bridge.
        ei_device: Edge Impulse's latency device of the same chip (``None``: none).
        latency_budget_ms: latency a default model may have (the sweep's choice checks it).
        reference_limits: the most a default model may take of the MLPerf Tiny VWW int8
            reference's ``arena`` and ``flash`` (fractions; empty: no limit).
        sketch: the hand-written sketch folder export copies (``None``: ``firmware/boards/<name>``).
        unsupported_ops: builtin ops the board's TFLM library cannot register although TFLM's
            resolver knows them, with the reason (refused at export, not at compile time).
    """

    name: str
    title: str
    mcu: str
    clock_hz: int
    ram_bytes: int
    psram_bytes: int
    flash_bytes: int
    reserved_ram_bytes: int
    reserved_flash_bytes: int
    frame: tuple[int, int, int]
    frame_in_psram: bool
    cycles_per_mac: tuple[float, float]
    cycles_source: str
    fqbn: str
    core: str
    core_min: tuple[int, int, int]
    arduino_arch: str
    board_options: tuple[str, ...] = ()
    core_url: str | None = None
    libraries: tuple[tuple[str, str], ...] = ()
    upload_note: str = ""
    usb_ids: tuple[tuple[int, int | None], ...] = ()
    ei_device: str | None = None
    latency_budget_ms: float | None = None
    reference_limits: Mapping[str, float] = field(default_factory=dict)
    sketch: Path | None = None
    unsupported_ops: Mapping[str, str] = field(default_factory=dict)

    @property
    def frame_bytes(self) -> int:
        w, h, bpp = self.frame
        return w * h * bpp

    @property
    def arena_ram_bytes(self) -> int:
        """Internal RAM left for the tensor arena: RAM minus the firmware's share and, unless it
        lives in PSRAM, the camera frame."""
        return self.ram_bytes - self.reserved_ram_bytes - (0 if self.frame_in_psram else self.frame_bytes)

    @property
    def arena_psram_bytes(self) -> int:
        """PSRAM left for an arena that does not fit internal RAM (0 without PSRAM)."""
        if not self.psram_bytes:
            return 0
        return self.psram_bytes - (self.frame_bytes if self.frame_in_psram else 0)

    @property
    def model_flash_bytes(self) -> int:
        """Flash left for the model's flatbuffer after the core, TFLM and the sketch."""
        return self.flash_bytes - self.reserved_flash_bytes


BOARDS: dict[str, Board] = {
    "nano33ble": Board(
        name="nano33ble",
        title="Arduino Nano 33 BLE Sense (nRF52840, Cortex-M4F 64 MHz)",
        mcu="nRF52840 (Arm Cortex-M4F)",
        clock_hz=64_000_000,
        ram_bytes=256 * 1024,
        psram_bytes=0,
        flash_bytes=1024 * 1024,
        # Mbed OS core + USB CDC + Arduino_OV767X + sketch globals and stacks: about 64 KiB of
        # RAM in an empty TFLM sketch for this core (Mbed OS alone reserves heap/stack/ISR).
        reserved_ram_bytes=64 * 1024,
        # Mbed OS core + TFLM reference/CMSIS-NN kernels + camera library: about 300 KiB.
        reserved_flash_bytes=300 * 1024,
        frame=(176, 144, 2),  # OV7675 QCIF RGB565, the smallest size Arduino_OV767X offers
        frame_in_psram=False,
        cycles_per_mac=(4.8, 9.6),
        cycles_source=("MLPerf Tiny v1.0 VWW results: TFLM + CMSIS-NN on Cortex-M4 boards take "
                       "about 4.8 to 9.6 cycles per MAC (latency x clock / 7.5 M MACs)"),
        fqbn="arduino:mbed_nano:nano33ble",
        core="arduino:mbed_nano",
        core_min=(4, 0, 0),
        arduino_arch="mbed_nano",
        libraries=(("Chirale_TensorFLowLite", "2.0.0"), ("Arduino_OV767X", "0.0.2")),
        upload_note="double-press the reset button if the upload does not find the board",
        usb_ids=((0x2341, 0x805A), (0x2341, 0x005A), (0x2341, 0x8058), (0x2341, None)),
        ei_device="arduino-nano-33-ble",
        # Issue 7: 150 ms at 64 MHz, on the high end of the estimate.
        latency_budget_ms=150.0,
        # Issue 7's targets against the MLPerf Tiny VWW int8 model.
        reference_limits={"arena": 0.45, "flash": 0.25},
        unsupported_ops={"BATCH_MATMUL": "Chirale_TensorFlowLite 2.0.0 (the Nano's TFLM) has no AddBatchMatMul"},
    ),
    "esp32cam": Board(
        name="esp32cam",
        title="AI-Thinker ESP32-CAM (ESP32 240 MHz, 520 KB SRAM + 4 MB PSRAM)",
        mcu="ESP32 (Xtensa LX6 dual core)",
        clock_hz=240_000_000,
        # Of 520 KB SRAM about 320 KB is heap for an Arduino sketch; Wi-Fi is off in ours.
        ram_bytes=320 * 1024,
        psram_bytes=4 * 1024 * 1024,
        flash_bytes=3 * 1024 * 1024,  # "Huge APP" partition scheme: 3 MB app
        reserved_ram_bytes=96 * 1024,  # ESP-IDF, FreeRTOS tasks, camera driver DMA buffers
        reserved_flash_bytes=900 * 1024,  # Arduino-ESP32 core + esp32-camera + TFLM + esp-nn
        frame=(320, 240, 2),  # OV2640 QVGA RGB565 in PSRAM
        frame_in_psram=True,
        cycles_per_mac=(12.7, 12.7),
        cycles_source=("esp-nn / esp-tflite-micro published person-detection figures on ESP32: "
                       "about 12.7 cycles per MAC with esp-nn optimized kernels"),
        fqbn="esp32:esp32:esp32cam",
        # Huge APP: 3 MB for the program, room for the model array (the default gives 1.2 MB).
        board_options=("PartitionScheme=huge_app",),
        core="esp32:esp32",
        core_min=(3, 0, 0),
        core_url=ESP32_INDEX_URL,
        arduino_arch="esp32",
        libraries=(),  # the esp32 core (>= 3.0) bundles TFLite Micro with esp-nn and esp32-camera
        upload_note="boards without auto-reset: hold IO0 to GND while pressing reset, then upload",
        usb_ids=((0x303A, None), (0x1A86, 0x7523), (0x1A86, 0x55D4), (0x10C4, 0xEA60)),
        ei_device="espressif-esp32",
        # Two classifications a second in the camera loop (JPEG capture and decode come on top).
        latency_budget_ms=500.0,
    ),
}

#: USB ids that say "some board of this vendor" or "a USB-serial bridge" when no board's own
#: ids match (the port finder names them; boards' ``usb_ids`` come first).
USB_BRIDGES: dict[tuple[int, int | None], str] = {
    (0x2341, None): "Arduino",
    (0x303A, None): "Espressif",
    (0x1A86, 0x7523): "CH340 bridge",
    (0x1A86, 0x55D4): "CH9102 bridge",
    (0x10C4, 0xEA60): "CP210x bridge",
}


def board_names() -> tuple[str, ...]:
    """The ``--board`` names, in registry order."""
    return tuple(BOARDS)


def get_board(name: str | Board) -> Board:
    """Look a board up by ``--board`` name (a :class:`Board` is returned as it is).

    Raises:
        FacemaskError: unknown name, with the valid names in the hint.
    """
    if isinstance(name, Board):
        return name
    try:
        return BOARDS[name]
    except (KeyError, TypeError):
        raise FacemaskError(f"unknown board {name!r}", f"use one of {', '.join(BOARDS)}") from None


def register_board(board: Board, *, replace: bool = False) -> Board:
    """Add a board to the registry; every command accepts its name from then on.

    Args:
        board: the entry. Its ``sketch`` (or ``firmware/boards/<name>``) must hold
            ``<name>.ino`` for ``export``.
        replace: allow replacing an entry of the same name.

    Raises:
        FacemaskError: the name is taken (and ``replace`` is false) or is not a plain name.
    """
    if not board.name or not board.name.replace("_", "").replace("-", "").isalnum():
        raise FacemaskError(f"board name {board.name!r} is not a plain name",
                            "use letters, digits, '-' and '_' (it names the sketch folder)")
    if board.name in BOARDS and not replace:
        raise FacemaskError(f"board {board.name!r} is already registered", "pass replace=True")
    BOARDS[board.name] = board
    return board


def model_defaults(name: str, path: Path | None = None) -> dict:
    """The board's entry of ``defaults.json``: ``train`` fields, pipeline options, ``from_sweep``.

    A board without an entry (or no file) gets ``{}``: the built-in defaults apply.

    Raises:
        FacemaskError: unknown board, or the file is not valid JSON.
    """
    get_board(name)
    path = Path(path) if path else DEFAULTS_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise FacemaskError(f"{path} is not readable JSON ({exc})",
                            "restore it from the checkout or rewrite it with `facemask-edge sweep "
                            "--write-defaults`") from None
    entry = doc.get("boards", {}).get(name, {}) if isinstance(doc, dict) else {}
    return dict(entry) if isinstance(entry, dict) else {}


def usb_kind(vid: int | None, pid: int | None) -> str | None:
    """What a USB serial port with these ids is: a board name, a vendor or a bridge, or ``None``.

    A board's exact (VID, PID) wins over any board's vendor-wide (VID, None), which wins over
    the generic :data:`USB_BRIDGES` names.
    """
    if vid is None:
        return None
    for exact in (True, False):
        for b in BOARDS.values():
            for v, p in b.usb_ids:
                if v == vid and ((p == pid) if exact else p is None):
                    return b.name
    return USB_BRIDGES.get((vid, pid)) or USB_BRIDGES.get((vid, None))
