"""What each supported board offers, and what the firmware takes before the model gets any.

One table for every stage: profile budgets, export, the board simulator's limits and ``flash``.
Numbers and their sources are written down so a user can check them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from facemask_edge.errors import FacemaskError

__all__ = ["Board", "BOARDS", "get_board"]


@dataclass(frozen=True)
class Board:
    """A target board and its budget.

    Attributes:
        name: the ``--board`` value.
        title: human name.
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
        usb_ids: (VID, PID or None) pairs that identify the board or its USB bridge.
    """

    name: str
    title: str
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
    usb_ids: tuple[tuple[int, int | None], ...] = field(default_factory=tuple)

    @property
    def frame_bytes(self) -> int:
        w, h, bpp = self.frame
        return w * h * bpp


BOARDS: dict[str, Board] = {
    "nano33ble": Board(
        name="nano33ble",
        title="Arduino Nano 33 BLE Sense (nRF52840, Cortex-M4F 64 MHz)",
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
        usb_ids=((0x2341, 0x805A), (0x2341, 0x005A), (0x2341, 0x8058), (0x2341, None)),
    ),
    "esp32cam": Board(
        name="esp32cam",
        title="AI-Thinker ESP32-CAM (ESP32 240 MHz, 520 KB SRAM + 4 MB PSRAM)",
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
        usb_ids=((0x303A, None), (0x1A86, 0x7523), (0x1A86, 0x55D4), (0x10C4, 0xEA60)),
    ),
}


def get_board(name: str) -> Board:
    """Look a board up by ``--board`` name, with the valid names in the error."""
    try:
        return BOARDS[name]
    except KeyError:
        raise FacemaskError(f"unknown board {name!r}", f"use one of {', '.join(BOARDS)}") from None
