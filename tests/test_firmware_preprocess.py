"""Preprocessing parity: firmware/common/fe_preprocess.c (built with gcc) against
facemask_edge.data.preprocess, byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facemask_edge.data.preprocess import (device_preprocess, rgb565_to_rgb888, rgb888_to_rgb565,
                                           to_int8)
from facemask_edge.export.host import (CAMERA_SIZES, load_host_firmware, parity_frame,
                                       parity_generated, parity_images, ParityStats)
from facemask_edge.testing import draw_face

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEMASK_EDGE_DEV_DATA", ROOT.parent / "shared" / "datasets" / "facemask-dev"))


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    return load_host_firmware(tmp_path_factory.mktemp("fe_host"))


def test_generated_frames_match_python_byte_for_byte(fw):
    stats = parity_generated(fw)
    # 10 frame shapes x 3 patterns x 6 model sizes x 2 colours x 5 pixel formats
    assert stats.checked == 1800
    assert stats.mismatched == 0, stats.failures


@pytest.mark.parametrize("w,h", CAMERA_SIZES)
@pytest.mark.parametrize("size,color", [(96, "rgb"), (64, "grayscale"), (80, "rgb")])
def test_camera_frame_rgb565(fw, w, h, size, color):
    rng = np.random.default_rng(w * h + size)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    frame = rgb888_to_rgb565(rgb)
    want = to_int8(device_preprocess(rgb565_to_rgb888(frame, w, h), size, color))
    got = fw.preprocess(frame, w, h, "rgb565", size, 3 if color == "rgb" else 1)
    assert got.dtype == np.int8 and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("side,size", [(64, 8), (72, 8), (24, 3), (48, 48), (144, 48), (240, 48)])
@pytest.mark.parametrize("fmt", ["rgb565", "rgb565_le"])
def test_rgb565_box_sums_at_the_packed_limit(fw, side, size, fmt):
    """The RGB565 path sums fields packed in one word for boxes of up to 64 pixels (8x8 here) and
    falls back above (9x9): all-ones pixels, the largest sums, and random ones on both sides."""
    rng = np.random.default_rng(side * size)
    for rgb in (np.full((side, side, 3), 255, np.uint8), rng.integers(0, 256, (side, side, 3), dtype=np.uint8)):
        frame = rgb888_to_rgb565(rgb)
        if fmt == "rgb565_le":
            frame = np.frombuffer(frame, np.uint8).reshape(-1, 2)[:, ::-1].tobytes()
        want = device_preprocess(rgb565_to_rgb888(rgb888_to_rgb565(rgb), side, side), size, "rgb")
        got = fw.preprocess(frame, side, side, fmt, size, 3, as_int8=False)
        assert got.tobytes() == want.tobytes()


def test_uint8_variant_is_int8_plus_128(fw):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (144, 176, 3), dtype=np.uint8)
    frame = rgb888_to_rgb565(rgb)
    u8 = fw.preprocess(frame, 176, 144, "rgb565", 96, 3, as_int8=False)
    i8 = fw.preprocess(frame, 176, 144, "rgb565", 96, 3)
    assert np.array_equal(u8, device_preprocess(rgb565_to_rgb888(frame, 176, 144), 96, "rgb"))
    assert np.array_equal(i8.astype(np.int16) + 128, u8.astype(np.int16))


def test_rgb565_byte_order_matters(fw):
    """The cameras send the high byte first; reading it as little-endian gives other pixels."""
    rgb = np.zeros((120, 160, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red: 0xF800, bytes F8 00
    frame = rgb888_to_rgb565(rgb)
    assert frame[:2] == b"\xf8\x00"
    be = fw.preprocess(frame, 160, 120, "rgb565", 8, 3, as_int8=False)
    assert (be[..., 0] == 255).all() and (be[..., 1:] == 0).all()
    swapped = fw.preprocess(frame, 160, 120, "rgb565_le", 8, 3, as_int8=False)
    assert not np.array_equal(swapped, be)


def test_bad_arguments_are_refused(fw):
    frame = bytes(160 * 120 * 2)
    with pytest.raises(ValueError, match="returned -1"):
        fw.preprocess(frame, 160, 120, "rgb565", 96, 2)  # channels must be 1 or 3
    with pytest.raises(ValueError, match="returned -1"):
        fw.preprocess(frame, 160, 120, "rgb565", 0, 3)
    with pytest.raises(ValueError, match="needs 38400 bytes"):
        fw.preprocess(frame[:-1], 160, 120, "rgb565", 96, 3)


def test_synthetic_face_images(fw, tmp_path):
    """Drawn faces saved as JPEG/PNG/WEBP/BMP, decoded like the data set, resized to camera sizes."""
    rng = np.random.RandomState(1)
    paths = []
    for i, (fmt, ext) in enumerate([("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"),
                                    ("BMP", ".bmp")] * 3):
        path = tmp_path / f"face_{i}{ext}"
        draw_face(rng, masked=i % 2 == 0, size=96 + 7 * i).save(path, fmt)
        paths.append(path)
    stats = parity_images(fw, paths)
    assert stats.images == 12
    assert stats.checked == 12 * 3 * 2 * 5
    assert stats.mismatched == 0, stats.failures


@pytest.mark.shared
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"no data set at {SHARED}")
def test_facemask_dev_images(fw):
    """At least 50 real photos of facemask-dev, both classes, every pixel format."""
    sys.path.insert(0, str(ROOT / "firmware" / "host"))
    try:
        from preprocess_parity import dataset_images
    finally:
        sys.path.pop(0)
    paths = dataset_images(SHARED, 60)
    assert len(paths) == 60 and len({p.parent.name for p in paths}) == 2
    stats = parity_images(fw, paths)
    assert stats.images >= 50
    assert stats.checked == stats.images * 3 * 2 * 5
    assert stats.mismatched == 0, stats.failures


def test_parity_script_runs(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, str(ROOT / "firmware/host/preprocess_parity.py"),
                           "--generated"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "1800 comparisons on 30 frames, 0 mismatched" in proc.stdout


def test_parity_detects_a_difference(fw):
    """The comparison is not vacuous: a frame fed with the wrong byte order is caught."""
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (144, 176, 3), dtype=np.uint8)

    class Swapped:
        def preprocess(self, frame, w, h, fmt, size, ch):
            fmt = {"rgb565": "rgb565_le", "rgb565_le": "rgb565"}.get(fmt, fmt)
            return fw.preprocess(frame, w, h, fmt, size, ch)

    stats = ParityStats()
    parity_frame(Swapped(), rgb, stats, sizes=(96,))
    assert stats.mismatched == 4  # both RGB565 byte orders, RGB and grayscale models
