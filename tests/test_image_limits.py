"""Hostile images (issue 12, finding 3): a huge image is decoded reduced with bounded memory, a
PNG whose pixel data ends early is refused with its row count, and ordinary images preprocess
exactly as before (the firmware parity depends on it)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facemask_edge.data.images import decode_image
from facemask_edge.data.ingest import scan_dataset
from facemask_edge.data.preprocess import _bounds, box_resize, device_preprocess

ROOT = Path(__file__).resolve().parents[1]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I",
                                                                   zlib.crc32(kind + data))


def short_png(width: int, height: int, rows: int) -> bytes:
    """A valid-looking RGB PNG that declares ``height`` rows and holds ``rows`` of them."""
    raw = b"".join(b"\x00" + bytes([180, 90, 30]) * width for _ in range(rows))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                                   0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))


@pytest.mark.parametrize("width,height,rows", [(64, 64, 2), (9400, 9400, 10)])
def test_png_with_missing_rows_is_refused(width, height, rows):
    data = short_png(width, height, rows)
    with pytest.raises(ValueError, match=f"truncated: {rows} of {height} rows"):
        decode_image(data)


def test_truncated_png_is_skipped_with_its_reason(tmp_path):
    for i, cls in enumerate(("with_mask", "without_mask")):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (20, 20), (10, 200, 30 * i)).save(tmp_path / cls / "ok.png")
    (tmp_path / "with_mask" / "short.png").write_bytes(short_png(64, 64, 2))
    ds = scan_dataset(tmp_path, size=16, use_cache=False)
    assert [s["path"] for s in ds.skipped] == ["with_mask/short.png"]
    assert "truncated: 2 of 64 rows" in ds.skipped[0]["reason"]


def _old_box_resize(img: np.ndarray, size: int) -> np.ndarray:
    """The integral-image version this replaced (int64 copy of the whole image)."""
    ys, ye = _bounds(img.shape[0], size)
    xs, xe = _bounds(img.shape[1], size)
    integ = np.zeros((img.shape[0] + 1, img.shape[1] + 1, img.shape[2]), dtype=np.int64)
    integ[1:, 1:] = img.astype(np.int64).cumsum(0).cumsum(1)
    total = integ[ye][:, xe] - integ[ys][:, xe] - integ[ye][:, xs] + integ[ys][:, xs]
    count = ((ye - ys)[:, None] * (xe - xs)[None, :])[..., None]
    return ((total + count // 2) // count).astype(np.uint8)


def test_box_resize_is_bit_identical_to_the_integral_image_version():
    rng = np.random.RandomState(1)
    for side in (1, 2, 5, 95, 96, 97, 191, 320, 777):
        for size in (1, 16, 96, 128):
            for channels in (1, 3):
                img = rng.randint(0, 256, (side, side, channels)).astype(np.uint8)
                assert np.array_equal(box_resize(img, size), _old_box_resize(img, size)), \
                    (side, size, channels)


def test_ordinary_images_decode_whole_and_unchanged(tmp_path):
    rng = np.random.RandomState(2)
    pixels = rng.randint(0, 256, (300, 400, 3)).astype(np.uint8)
    for fmt in ("PNG", "JPEG", "WEBP"):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt)
        dec = decode_image(buf.getvalue())
        ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        assert dec.reduced == 1 and (dec.width, dec.height) == (400, 300)
        assert np.array_equal(dec.rgb, ref), fmt


def test_large_image_is_decoded_reduced_and_close_to_the_full_preprocessing():
    rng = np.random.RandomState(3)
    small = rng.randint(0, 256, (12, 16, 3)).astype(np.uint8)  # smooth, like a photo
    big = np.asarray(Image.fromarray(small).resize((1600, 1200), Image.BILINEAR))
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(big).save(buf, fmt, quality=95)
        whole = decode_image(buf.getvalue(), reduce_above=10 ** 8)
        part = decode_image(buf.getvalue(), reduce_above=200_000)
        assert whole.reduced == 1 and part.reduced > 1
        assert (part.width, part.height) == (1600, 1200)  # the file's size, not the decoded one
        assert part.rgb.shape[0] * part.rgb.shape[1] <= 200_000 * 1.1
        a = device_preprocess(whole.rgb, 96).astype(int)
        b = device_preprocess(part.rgb, 96).astype(int)
        assert np.abs(a - b).mean() < 3, fmt


def test_too_many_pixels_is_refused_before_decoding(monkeypatch):
    buf = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buf, "PNG")
    monkeypatch.setenv("FACEMASK_EDGE_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(ValueError, match="too many pixels: 300x200"):
        decode_image(buf.getvalue())
    assert decode_image(buf.getvalue(), max_pixels=60_000).width == 300


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_two_9400_pixel_images_stay_under_600_mb(tmp_path):
    """Peak RSS of a ``scan_dataset`` of two 9400x9400 images (about 9 GB before the fix)."""
    data = tmp_path / "data"
    for i, cls in enumerate(("with_mask", "without_mask")):
        (data / cls).mkdir(parents=True)
        img = Image.new("RGB", (9400, 9400), (30 + 100 * i, 120, 200))
        img.save(data / cls / "huge.png", compress_level=1)
        img.save(data / cls / "huge.jpg", quality=80)
        del img
    # VmHWM, not ru_maxrss: Linux carries the parent's peak into a child's ru_maxrss across
    # fork/exec, so a big pytest process would be measured instead of the scan.
    script = textwrap.dedent(f"""
        import re, sys, time
        from facemask_edge.data.ingest import scan_dataset
        t = time.monotonic()
        ds = scan_dataset({str(data)!r}, size=96, use_cache=False, workers=4)
        assert len(ds.items) == 4, ds.skipped
        hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
        print(hwm, time.monotonic() - t)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACEMASK_EDGE_CACHE": str(tmp_path / "c")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    peak_kib, seconds = out.stdout.split()
    print(f"peak RSS {int(peak_kib) / 1024:.0f} MiB, {float(seconds):.1f} s")
    assert int(peak_kib) < 600 * 1024
