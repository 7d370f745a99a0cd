"""Decode real-world image files to RGB888, once, whatever their format.

Hostile files are bounded here (issue 12, finding 3): a file declaring more pixels than the
``image_pixels`` limit is refused before its pixels are decoded; one above ``reduce_above_pixels``
is decoded reduced (JPEG: the decoder's DCT scaling via ``draft``; every format: then
``Image.reduce``, a box average) so that no whole-image copy outlives the decoder; the pixels
being decoded at one time by all threads together stay under ``decode_pixels``; and a PNG whose
pixel data ends before its last row is refused ("truncated: N of M rows") instead of being
padded with black, which Pillow does silently when the compressed stream ends early.
Images at or below ``reduce_above_pixels`` decode exactly as before, so their preprocessed
pixels (and the firmware parity) do not change.
"""

from __future__ import annotations

import hashlib
import math
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from facemask_edge.limits import limit

__all__ = ["Decoded", "decode_image", "pixel_hash"]


@dataclass
class Decoded:
    """A decoded image: uint8 ``(H, W, 3)`` RGB pixels and what the file was.

    Attributes:
        rgb: the pixels (reduced by ``reduced`` on each axis for very large files).
        format: the decoded format (``JPEG``, ``PNG``...).
        mode: the file's Pillow mode.
        width: full-resolution width after EXIF rotation (``rgb``'s when not reduced).
        height: full-resolution height after EXIF rotation.
        reduced: the reduction factor (1: decoded whole).
    """

    rgb: np.ndarray
    format: str
    mode: str
    width: int = 0
    height: int = 0
    reduced: int = 1

    def __post_init__(self):
        if not self.width or not self.height:
            self.height, self.width = self.rgb.shape[:2]


class _PixelBudget:
    """Pixels being decoded by all threads together: a thread waits until its image fits, and
    an image larger than the whole budget waits until it is decoded alone."""

    def __init__(self):
        self._cond = threading.Condition()
        self._used = 0

    def acquire(self, pixels: int, budget: int) -> None:
        with self._cond:
            while self._used and self._used + pixels > budget:
                self._cond.wait()
            self._used += pixels

    def release(self, pixels: int) -> None:
        with self._cond:
            self._used -= pixels
            self._cond.notify_all()


_BUDGET = _PixelBudget()


def _malloc_trim() -> None:
    """Give freed heap back to the OS (glibc). Each decoding thread has its own malloc arena,
    which keeps the pages of a freed huge image: without this, two huge images decoded by two
    threads one after the other cost twice the memory of one."""
    global _trim
    if _trim is None:
        try:
            import ctypes

            _trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _trim = False
    if _trim:
        _trim(0)


_trim = None


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite transparent pixels on white: what a viewer shows, not the hidden colour."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _png_rows(fp) -> tuple[int, int] | None:
    """``(rows present, rows declared)`` of a PNG's pixel data, or None if it cannot tell.

    Inflates the IDAT stream once more, counting bytes and keeping none: Pillow pads a stream
    that ends early with black and reports nothing.
    """
    fp.seek(8)
    ihdr = None
    inflate = zlib.decompressobj()
    got = 0
    while True:
        head = fp.read(8)
        if len(head) < 8:
            break
        length, ctype = struct.unpack(">I4s", head)
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", fp.read(13))
            fp.seek(length - 13 + 4, 1)
            continue
        if ctype == b"IDAT":
            left = length
            while left:
                chunk = fp.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
                try:
                    data = inflate.decompress(chunk, 1 << 20)
                    got += len(data)
                    while inflate.unconsumed_tail:
                        data = inflate.decompress(inflate.unconsumed_tail, 1 << 20)
                        got += len(data)
                except zlib.error:
                    return None  # Pillow reports broken streams itself
            fp.seek(4, 1)
            continue
        if ctype == b"IEND":
            break
        fp.seek(length + 4, 1)
    if ihdr is None:
        return None
    width, height, depth, color, _, _, interlace = ihdr
    channels = _PNG_CHANNELS.get(color)
    if channels is None or interlace:  # Adam7 rows are not in order; Pillow checks those less
        return None
    row = 1 + (width * channels * depth + 7) // 8
    return min(height, got // row), height


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    """Box-reduce by ``factor`` in a mode Pillow can reduce; alpha is averaged premultiplied."""
    if img.mode in ("1", "P", "PA", "I;16", "I;16B", "I;16L", "I;16N"):
        has_alpha = img.mode == "PA" or (img.mode == "P" and "transparency" in img.info)
        img = img.convert("RGBA" if has_alpha else ("I" if img.mode.startswith("I") else
                                                     "RGB" if img.mode != "1" else "L"))
    premultiplied = {"RGBA": "RGBa", "LA": "La"}.get(img.mode)
    if premultiplied:
        return img.convert(premultiplied).reduce(factor).convert(img.mode)
    return img.reduce(factor)


def decode_image(source: str | Path | bytes, *, max_pixels: int | None = None,
                 reduce_above: int | None = None) -> Decoded:
    """Decode a file (or its bytes) to RGB888.

    Handles JPEG/PNG/WEBP/BMP/GIF whatever the extension, EXIF rotation, palette images with
    transparency, grayscale, 16-bit and CMYK. Raises ``ValueError`` with a short reason when the
    content is not a complete image or is larger than the limits.

    Args:
        source: a path or the file's bytes.
        max_pixels: refuse images with more pixels (default: the ``image_pixels`` limit).
        reduce_above: decode larger images reduced to about this many pixels (default: the
            ``reduce_above_pixels`` limit).
    """
    import io

    max_pixels = int(limit("image_pixels", max_pixels))
    reduce_above = int(limit("reduce_above_pixels", reduce_above))
    budget = int(limit("decode_pixels"))
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    with fp:
        head = fp.read(16)
        if not head:
            raise ValueError("empty file")
        fp.seek(0)
        try:
            with warnings.catch_warnings():
                # Our own limit below replaces Pillow's warning; its hard error still applies.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(fp)
        except Image.DecompressionBombError as exc:
            raise ValueError(f"too many pixels ({exc})") from None
        except Image.UnidentifiedImageError:
            raise ValueError("not an image (unrecognised content)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"corrupt {head[:4]!r}... image: {exc}") from None
        fmt = img.format or "unknown"
        mode = img.mode
        width, height = img.size
        pixels = width * height
        if pixels > max_pixels:
            raise ValueError(f"too many pixels: {width}x{height} = {pixels:,} (limit "
                             f"{max_pixels:,}, FACEMASK_EDGE_MAX_IMAGE_PIXELS)")
        factor = math.ceil(math.sqrt(pixels / reduce_above)) if pixels > reduce_above else 1
        if factor > 1 and fmt == "JPEG":
            # DCT scaling (1/2, 1/4, 1/8) in the decoder: never materialise the full image.
            img.draft(img.mode, (max(1, width // factor), max(1, height // factor)))
        cost = img.size[0] * img.size[1]
        _BUDGET.acquire(cost, budget)
        try:
            try:
                img.load()  # truncated data raises here
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                raise ValueError(f"corrupt {head[:4]!r}... image: {exc}") from None
            if fmt == "PNG":
                rows = _png_rows(fp)
                if rows is not None and rows[0] < rows[1]:
                    raise ValueError(f"truncated: {rows[0]} of {rows[1]} rows")
            if factor > 1:
                # What is left after any draft: reduce to about ``reduce_above`` pixels, before
                # anything else copies the image (EXIF rotation returns a copy even when there
                # is nothing to rotate).
                rest = math.ceil(math.sqrt(img.size[0] * img.size[1] / reduce_above))
                if rest > 1:
                    img = _reduce(img, rest)
                factor = max(1, round(width / img.size[0]))
            before = img.size
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # broken EXIF must not lose an otherwise good image
                pass
            if img.size != before and img.size == before[::-1]:
                width, height = height, width
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.uint32)
                scale = 257 if arr.max() > 255 else 1
                img = Image.fromarray((arr // scale).clip(0, 255).astype(np.uint8), "L")
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                img = _flatten_alpha(img)
            elif img.mode != "RGB":
                img = img.convert("RGB")
            rgb = np.asarray(img, dtype=np.uint8)
        finally:
            if cost > reduce_above:
                # Hand the pages back before the next large decode may start.
                del img
                _malloc_trim()
            _BUDGET.release(cost)
        if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise ValueError("image has no pixels")
        if factor == 1:
            height, width = rgb.shape[:2]
        return Decoded(rgb=rgb, format=fmt, mode=mode, width=width, height=height,
                       reduced=factor)


def pixel_hash(rgb: np.ndarray) -> str:
    """sha256 of the decoded pixels and their shape: equal for byte-different copies of one image."""
    h = hashlib.sha256(str(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()
