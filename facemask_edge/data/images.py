"""Decode real-world image files to RGB888, once, whatever their format."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["Decoded", "decode_image", "pixel_hash"]


@dataclass
class Decoded:
    """A decoded image: uint8 ``(H, W, 3)`` RGB pixels and what the file was."""

    rgb: np.ndarray
    format: str
    mode: str


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite transparent pixels on white: what a viewer shows, not the hidden colour."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def decode_image(source: str | Path | bytes) -> Decoded:
    """Decode a file (or its bytes) to RGB888.

    Handles JPEG/PNG/WEBP/BMP/GIF whatever the extension, EXIF rotation, palette images with
    transparency, grayscale, 16-bit and CMYK. Raises ``ValueError`` with a short reason when the
    content is not a complete image.
    """
    import io

    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    with fp:
        head = fp.read(16)
        if not head:
            raise ValueError("empty file")
        fp.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(fp)
                fmt = img.format or "unknown"
                mode = img.mode
                img.load()  # truncated data raises here
        except Image.DecompressionBombError as exc:
            raise ValueError(f"too many pixels ({exc})") from None
        except Image.DecompressionBombWarning:
            raise ValueError("too many pixels for a face image") from None
        except Image.UnidentifiedImageError:
            raise ValueError("not an image (unrecognised content)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"corrupt {head[:4]!r}... image: {exc}") from None
        try:
            img = ImageOps.exif_transpose(img)
        except Exception:  # broken EXIF must not lose an otherwise good image
            pass
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.uint32)
            scale = 257 if arr.max() > 255 else 1
            img = Image.fromarray((arr // scale).clip(0, 255).astype(np.uint8), "L")
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = _flatten_alpha(img)
        elif img.mode != "RGB":
            img = img.convert("RGB")
        rgb = np.asarray(img, dtype=np.uint8)
        if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise ValueError("image has no pixels")
        return Decoded(rgb=rgb, format=fmt, mode=mode)


def pixel_hash(rgb: np.ndarray) -> str:
    """sha256 of the decoded pixels and their shape: equal for byte-different copies of one image."""
    h = hashlib.sha256(str(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()
