"""The firmware's portable C code, built for this computer and called from Python.

``firmware/common`` holds the C the boards run: preprocessing, result formatting (and the
protocol). Building it with the host's ``gcc`` and calling it through ``ctypes`` lets the tests
and the parity check feed it exactly what a camera would, and compare byte for byte with
:mod:`facemask_edge.data.preprocess`, the reference the model was trained with.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from facemask_edge.native.build import HOST_CFLAGS, build, load_library
from facemask_edge.paths import firmware_dir

__all__ = [
    "HOST_CFLAGS",
    "ARM_CFLAGS",
    "PIXEL_FORMATS",
    "build_shared_library",
    "HostFirmware",
    "load_host_firmware",
    "CAMERA_SIZES",
    "MODEL_SIZES",
    "ParityStats",
    "parity_frame",
    "parity_generated",
    "parity_images",
]

# HOST_CFLAGS (imported above) live with the host build; these are the Cortex-M4 ones.
ARM_CFLAGS = ("-std=c99", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
              "-Wall", "-Wextra", "-Werror", "-Os", "-ffunction-sections", "-fdata-sections")

# fe_pixel_format_t values (fe_preprocess.h).
PIXEL_FORMATS = {"rgb565": 0, "rgb565_le": 1, "gray8": 2, "rgb888": 3, "bgr888": 4}

# C files of firmware/common that need no TFLM and no protocol peer: what the host builds.
HOST_SOURCES = ("fe_preprocess.c", "fe_result.c")


def build_shared_library(out_dir: str | Path | None = None, sources: tuple[str, ...] = HOST_SOURCES,
                         extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile ``firmware/common`` sources into a shared library (:func:`facemask_edge.native.build.build`).

    The library's name carries a hash of the sources and flags, so a rebuild happens only when
    they change. Compiler warnings fail the build (``-Werror``).

    Args:
        out_dir: a private build folder (default: the user's cache, ``cache_dir()/native``).

    Returns:
        Path of the ``.so``.
    """
    common = firmware_dir() / "common"
    return build([common / s for s in sources], "libfe_common", flags=HOST_CFLAGS + tuple(extra_flags),
                 include_dirs=[common], out_dir=out_dir)


class HostFirmware:
    """ctypes view of the host build of ``fe_preprocess.c`` and ``fe_result.c``."""

    def __init__(self, library: str | Path):
        self.path = Path(library)
        lib = load_library(self.path)  # private folder, bytes match the build record
        u8p, i8p = ctypes.POINTER(ctypes.c_uint8), ctypes.POINTER(ctypes.c_int8)
        lib.fe_preprocess.argtypes = [u8p, ctypes.c_uint16, ctypes.c_uint16, ctypes.c_int,
                                      ctypes.c_uint16, ctypes.c_uint8, i8p]
        lib.fe_preprocess.restype = ctypes.c_int
        lib.fe_preprocess_u8.argtypes = [u8p, ctypes.c_uint16, ctypes.c_uint16, ctypes.c_int,
                                         ctypes.c_uint16, ctypes.c_uint8, u8p]
        lib.fe_preprocess_u8.restype = ctypes.c_int
        lib.fe_frame_bytes.argtypes = [ctypes.c_int, ctypes.c_uint16, ctypes.c_uint16]
        lib.fe_frame_bytes.restype = ctypes.c_size_t
        lib.fe_argmax.argtypes = [i8p, ctypes.c_size_t]
        lib.fe_argmax.restype = ctypes.c_size_t
        lib.fe_confidence.argtypes = [ctypes.c_int8, ctypes.c_float, ctypes.c_int32]
        lib.fe_confidence.restype = ctypes.c_uint8
        lib.fe_format_pred.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32,
                                       ctypes.c_size_t, ctypes.c_char_p, ctypes.c_uint8,
                                       ctypes.c_uint32, i8p, ctypes.c_size_t]
        lib.fe_format_pred.restype = ctypes.c_size_t
        self._lib = lib

    def frame_bytes(self, fmt: str, width: int, height: int) -> int:
        return int(self._lib.fe_frame_bytes(PIXEL_FORMATS[fmt], width, height))

    def preprocess(self, frame: bytes, width: int, height: int, fmt: str, size: int,
                   channels: int, as_int8: bool = True) -> np.ndarray:
        """Run ``fe_preprocess`` (or ``fe_preprocess_u8``) on one frame.

        Returns:
            ``(size, size, channels)`` int8 (or uint8) array.

        Raises:
            ValueError: the C code refused the arguments (its return code is in the message).
        """
        need = self.frame_bytes(fmt, width, height)
        if len(frame) != need:
            raise ValueError(f"{fmt} {width}x{height} frame needs {need} bytes, got {len(frame)}")
        src = (ctypes.c_uint8 * len(frame)).from_buffer_copy(frame)
        out = np.zeros(size * size * channels, dtype=np.int8 if as_int8 else np.uint8)
        fn = self._lib.fe_preprocess if as_int8 else self._lib.fe_preprocess_u8
        ptr = out.ctypes.data_as(ctypes.POINTER(ctypes.c_int8 if as_int8 else ctypes.c_uint8))
        rc = fn(src, width, height, PIXEL_FORMATS[fmt], size, channels, ptr)
        if rc != 0:
            raise ValueError(f"fe_preprocess returned {rc}")
        return out.reshape(size, size, channels)

    def argmax(self, scores) -> int:
        arr = np.ascontiguousarray(scores, dtype=np.int8)
        return int(self._lib.fe_argmax(arr.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)), arr.size))

    def confidence(self, score: int, scale: float, zero_point: int) -> int:
        return int(self._lib.fe_confidence(score, scale, zero_point))

    def format_pred(self, uptime_ms: int, index: int, label: str, confidence: int,
                    inference_us: int, scores, cap: int = 512) -> str:
        arr = np.ascontiguousarray(scores, dtype=np.int8)
        buf = ctypes.create_string_buffer(cap)
        n = self._lib.fe_format_pred(buf, cap, uptime_ms, index, label.encode(), confidence,
                                     inference_us, arr.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
                                     arr.size)
        return buf.raw[:n].decode("ascii")


def load_host_firmware(build_dir: str | Path | None = None) -> HostFirmware:
    """Build (if needed) and load the host firmware library.

    Args:
        build_dir: a private folder for the ``.so`` (default: the user's cache; never a shared
            temporary folder, where anyone could plant a library of the expected name).
    """
    return HostFirmware(build_shared_library(build_dir))


# Frame sizes cameras deliver (OV7675 QQVGA/QCIF, OV2640 QVGA) and model input sides.
CAMERA_SIZES = ((160, 120), (176, 144), (320, 240))
MODEL_SIZES = (96, 64, 80)


class ParityStats:
    """Counts of C-vs-Python comparisons: ``checked``, ``mismatched``, and the first failures."""

    def __init__(self):
        self.checked = 0
        self.mismatched = 0
        self.images = 0
        self.failures: list[str] = []

    def add(self, ok: bool, what: str) -> None:
        self.checked += 1
        if not ok:
            self.mismatched += 1
            if len(self.failures) < 10:
                self.failures.append(what)

    def __str__(self) -> str:
        return (f"{self.checked} comparisons on {self.images} frames, {self.mismatched} mismatched"
                + (f" (first: {'; '.join(self.failures[:3])})" if self.failures else ""))


def parity_frame(fw: HostFirmware, rgb: np.ndarray, stats: ParityStats, sizes=MODEL_SIZES,
                 tag: str = "") -> None:
    """Compare C and Python preprocessing of one RGB888 frame, fed as RGB565 (both byte orders),
    RGB888, BGR888 and grayscale, for RGB and grayscale models of every size."""
    from facemask_edge.data.preprocess import (device_preprocess, rgb565_to_rgb888,
                                               rgb888_to_rgb565, to_grayscale, to_int8)

    h, w = rgb.shape[:2]
    be = rgb888_to_rgb565(rgb)
    le = np.frombuffer(be, dtype=">u2").astype("<u2").tobytes()
    expanded = rgb565_to_rgb888(be, w, h)
    gray = to_grayscale(rgb)[..., 0]
    stats.images += 1
    for size in sizes:
        for color, ch in (("rgb", 3), ("grayscale", 1)):
            want565 = to_int8(device_preprocess(expanded, size, color))
            want888 = to_int8(device_preprocess(rgb, size, color))
            want_gray = to_int8(device_preprocess(gray, size, color))
            cases = (("rgb565", be, want565), ("rgb565_le", le, want565),
                     ("rgb888", rgb.tobytes(), want888),
                     ("bgr888", np.ascontiguousarray(rgb[..., ::-1]).tobytes(), want888),
                     ("gray8", gray.tobytes(), want_gray))
            for fmt, frame, want in cases:
                got = fw.preprocess(frame, w, h, fmt, size, ch)
                stats.add(np.array_equal(got, want), f"{tag} {fmt} {w}x{h} -> {size} {color}")


def parity_generated(fw: HostFirmware, seed: int = 0) -> ParityStats:
    """Parity on random and structured frames of camera and odd sizes."""
    rng = np.random.default_rng(seed)
    stats = ParityStats()
    shapes = [*CAMERA_SIZES, (640, 480), (96, 96), (97, 61), (61, 97), (7, 5), (1, 1), (33, 200)]
    for w, h in shapes:
        noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        yy, xx = np.mgrid[0:h, 0:w]
        ramp = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                         ((xx + yy) * 7) % 256], axis=-1).astype(np.uint8)
        extremes = np.where(rng.random((h, w, 1)) < 0.5, 0, 255).astype(np.uint8).repeat(3, -1)
        for name, frame in (("noise", noise), ("ramp", ramp), ("extremes", extremes)):
            parity_frame(fw, frame, stats, sizes=(*MODEL_SIZES, 1, 3, 200), tag=name)
    return stats


def parity_images(fw: HostFirmware, paths, sizes=MODEL_SIZES) -> ParityStats:
    """Parity on real photos: each is decoded, resized to a camera frame size (cycling through
    CAMERA_SIZES) and fed in every pixel format. Files that do not decode are skipped."""
    from PIL import Image

    from facemask_edge.data.images import decode_image

    stats = ParityStats()
    for i, path in enumerate(paths):
        try:
            rgb = decode_image(path).rgb
        except ValueError:
            continue
        w, h = CAMERA_SIZES[i % len(CAMERA_SIZES)]
        frame = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR), dtype=np.uint8)
        parity_frame(fw, frame, stats, sizes=sizes, tag=Path(path).name)
    return stats
