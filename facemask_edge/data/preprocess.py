"""Device preprocessing: the exact integer arithmetic the firmware performs, in numpy.

Every image the toolkit trains on, evaluates, or streams to a board goes through these functions,
and ``firmware/common/preprocess.c`` implements the same steps bit for bit:

1. a camera frame in RGB565 (big-endian bytes, as OV7675/OV2640 send them) is expanded to RGB888
   by bit replication (``r8 = r5 << 3 | r5 >> 2``, ``g8 = g6 << 2 | g6 >> 4``);
2. centre crop to a square of side ``min(H, W)`` (offsets rounded down);
3. box-average resize to ``size x size``: output pixel ``o`` averages source pixels
   ``[o*S // D, (o+1)*S // D)`` on each axis (at least one pixel), rounded half up with integers;
4. grayscale models take ``(77 R + 150 G + 29 B + 128) >> 8`` of the resized pixels; a grayscale
   frame fed to an RGB model is replicated to three channels;
5. the int8 model input is ``pixel - 128`` (scale 1/255, zero point -128): no float math.

The float model sees ``pixel / 255`` of the same uint8 pixels, so host and device agree.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "rgb565_to_rgb888",
    "rgb888_to_rgb565",
    "center_crop_box",
    "box_resize",
    "to_grayscale",
    "device_preprocess",
    "to_int8",
    "COLORS",
]

COLORS = ("rgb", "grayscale")


def rgb565_to_rgb888(frame: bytes | np.ndarray, width: int, height: int) -> np.ndarray:
    """Expand an RGB565 frame (2 bytes a pixel, high byte first) to uint8 ``(H, W, 3)``."""
    raw = np.frombuffer(bytes(frame), dtype=">u2") if not isinstance(frame, np.ndarray) else frame
    raw = raw.astype(np.uint16).reshape(height, width)
    r5 = (raw >> 11) & 0x1F
    g6 = (raw >> 5) & 0x3F
    b5 = raw & 0x1F
    r = (r5 << 3) | (r5 >> 2)
    g = (g6 << 2) | (g6 >> 4)
    b = (b5 << 3) | (b5 >> 2)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def rgb888_to_rgb565(rgb: np.ndarray) -> bytes:
    """Pack uint8 ``(H, W, 3)`` into RGB565 bytes, high byte first (what the camera sends)."""
    rgb = rgb.astype(np.uint16)
    packed = ((rgb[..., 0] >> 3) << 11) | ((rgb[..., 1] >> 2) << 5) | (rgb[..., 2] >> 3)
    return packed.astype(">u2").tobytes()


def center_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """Return ``(y0, x0, side)`` of the centred square crop."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def _bounds(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    o = np.arange(dst, dtype=np.int64)
    start = (o * src) // dst
    end = ((o + 1) * src) // dst
    end = np.maximum(end, start + 1)
    return start, end


def _band_sums(img: np.ndarray, start: np.ndarray, end: np.ndarray, axis: int) -> np.ndarray:
    """Exact integer sums of ``img`` over the bands ``[start[i], end[i])`` of ``axis`` (int32).

    One band at a time, so the working memory is one output slab, never a whole-image int64
    array (a 9400x9400 image used to cost 4.4 GB here). int32 cannot overflow: a band of a side
    below 8 million pixels sums to less than ``2**31``.
    """
    img = np.moveaxis(img, axis, 0)
    out = np.empty((len(start),) + img.shape[1:], dtype=np.int64 if img.dtype == np.int64
                   else np.int32)
    for i, (a, b) in enumerate(zip(start.tolist(), end.tolist())):
        out[i] = img[a:b].sum(axis=0, dtype=out.dtype)
    return np.moveaxis(out, 0, axis)


def box_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Box-average a square uint8 image ``(S, S, C)`` to ``(size, size, C)`` with integer rounding."""
    ys, ye = _bounds(img.shape[0], size)
    xs, xe = _bounds(img.shape[1], size)
    # Separable exact sums: rows into bands, then columns; the same integers as summing each box.
    rows = _band_sums(img, ys, ye, 0)  # (size, W, C) int32
    total = _band_sums(rows.astype(np.int64), xs, xe, 1)  # (size, size, C)
    count = ((ye - ys)[:, None] * (xe - xs)[None, :])[..., None]
    return ((total + count // 2) // count).astype(np.uint8)


def to_grayscale(rgb: np.ndarray) -> np.ndarray:
    """Integer luma of uint8 ``(..., 3)``: ``(77 R + 150 G + 29 B + 128) >> 8``, shape ``(..., 1)``."""
    v = rgb.astype(np.int32)
    y = (77 * v[..., 0] + 150 * v[..., 1] + 29 * v[..., 2] + 128) >> 8
    return y.astype(np.uint8)[..., None]


def device_preprocess(image: np.ndarray, size: int, color: str = "rgb") -> np.ndarray:
    """Centre-crop, box-resize and colour-convert a uint8 frame exactly as the firmware does.

    Args:
        image: uint8 ``(H, W, 3)`` RGB888 or ``(H, W)`` / ``(H, W, 1)`` grayscale.
        size: model input side in pixels.
        color: ``"rgb"`` or ``"grayscale"`` (the model's input colour).

    Returns:
        uint8 ``(size, size, 3 or 1)``.
    """
    if color not in COLORS:
        raise ValueError(f"color must be one of {COLORS}, not {color!r}")
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    y0, x0, side = center_crop_box(img.shape[0], img.shape[1])
    img = box_resize(img[y0 : y0 + side, x0 : x0 + side], size)
    if color == "grayscale" and img.shape[-1] == 3:
        return to_grayscale(img)
    if color == "rgb" and img.shape[-1] == 1:
        return np.repeat(img, 3, axis=-1)
    return img


def to_int8(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels to the int8 model input: ``pixel - 128``."""
    return (pixels.astype(np.int16) - 128).astype(np.int8)
