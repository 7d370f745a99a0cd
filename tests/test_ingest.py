"""Data ingest: formats, bad files, layout errors, duplicates, manifest."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facemask_edge.data.images import decode_image
from facemask_edge.data.ingest import scan_dataset
from facemask_edge.errors import DataError
from facemask_edge.testing import make_synthetic_dataset


def _save(img: Image.Image, path: Path, fmt: str, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)
    return path


@pytest.fixture()
def messy(tmp_path) -> Path:
    root = make_synthetic_dataset(tmp_path / "data", per_class=6, size=48)
    wm, wo = root / "with_mask", root / "without_mask"
    rgb = Image.new("RGB", (40, 30), (200, 10, 10))
    # palette PNG with transparency, grayscale, CMYK JPEG, GIF, odd extension, 16-bit PNG
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.info["transparency"] = 0
    _save(pal, wm / "palette.png", "PNG", transparency=0)
    _save(Image.new("L", (30, 30), 90), wm / "gray.jpg", "JPEG")
    _save(Image.new("CMYK", (30, 30), (0, 255, 255, 0)), wo / "cmyk.jpg", "JPEG")
    _save(rgb, wo / "anim.gif", "GIF")
    _save(rgb, wo / "photo.jpg_1088Wx1632H", "JPEG")
    _save(Image.fromarray(np.full((8, 8), 40000, np.uint16)), wo / "deep.png", "PNG")
    # bad files: empty, text named .jpg, truncated JPEG, hidden file ignored
    (wm / "empty.jpg").write_bytes(b"")
    (wm / "notes.jpg").write_text("this is not an image\n")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "JPEG")
    (wo / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (wo / ".DS_Store").write_bytes(b"\x00\x01")
    return root


def test_messy_folder_decodes_everything_it_can_and_lists_the_rest(messy, tmp_path):
    ds = scan_dataset(messy, size=32, color="rgb", use_cache=False)
    skipped = {s["path"]: s["reason"] for s in ds.skipped}
    assert set(skipped) == {"with_mask/empty.jpg", "with_mask/notes.jpg", "without_mask/truncated.jpg"}
    assert "empty" in skipped["with_mask/empty.jpg"]
    assert "not an image" in skipped["with_mask/notes.jpg"]
    used = {it.path for it in ds.items}
    for name in ("with_mask/palette.png", "with_mask/gray.jpg", "without_mask/cmyk.jpg",
                 "without_mask/anim.gif", "without_mask/photo.jpg_1088Wx1632H", "without_mask/deep.png"):
        assert name in used
    assert ".DS_Store" not in " ".join(used | set(skipped))
    assert ds.images.shape == (len(ds.items), 32, 32, 3) and ds.images.dtype == np.uint8
    assert "skipped 3 file(s)" in ds.summary_line()
    ds.write_manifest(tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert len(manifest["used"]) + len(manifest["skipped"]) == 12 + 6 + 3
    assert (tmp_path / "run" / "skipped.txt").read_text().count("\n") == 3


def test_transparent_palette_pixels_become_white(tmp_path):
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0] * 256)
    path = _save(pal, tmp_path / "p.png", "PNG", transparency=0)
    assert (decode_image(path).rgb == 255).all()


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "r.jpg"
    img.save(path, "JPEG", exif=exif.tobytes())
    assert decode_image(path).rgb.shape[:2] == (40, 20)


def test_cmyk_and_16bit_become_rgb(messy):
    assert decode_image(messy / "without_mask" / "cmyk.jpg").rgb.shape[-1] == 3
    deep = decode_image(messy / "without_mask" / "deep.png").rgb
    assert deep.dtype == np.uint8 and 150 < deep.mean() < 160  # 40000 / 257


def test_nested_layout_and_zip(tmp_path):
    make_synthetic_dataset(tmp_path / "archive" / "repo-main" / "dataset", per_class=3, size=32)
    ds = scan_dataset(tmp_path / "archive", size=None, use_cache=False)
    assert ds.classes == ["with_mask", "without_mask"] and len(ds.items) == 6
    zpath = tmp_path / "d.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in (tmp_path / "archive").rglob("*"):
            if f.is_file():
                zf.write(f, f.relative_to(tmp_path / "archive"))
    zds = scan_dataset(zpath, size=16, use_cache=False)
    assert zds.classes == ds.classes and len(zds.items) == 6


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "does not exist"),
    (lambda p: make_synthetic_dataset(p, per_class=2) and
     __import__("shutil").rmtree(p / "without_mask"), "need at least 2"),
    (lambda p: (make_synthetic_dataset(p, per_class=2),
                [f.unlink() for f in (p / "without_mask").iterdir()]), "contain no files"),
    (lambda p: (make_synthetic_dataset(p, per_class=2),
                [f.write_text("x") for f in (p / "without_mask").iterdir()]), "no usable image"),
])
def test_layout_errors_are_clear(tmp_path, setup, message):
    root = tmp_path / "d"
    setup(root)
    with pytest.raises(DataError, match=message) as err:
        scan_dataset(root, size=16, use_cache=False)
    assert err.value.hint  # says what to do


def test_not_a_zip_file_is_refused(tmp_path):
    f = tmp_path / "data.txt"
    f.write_text("hello")
    with pytest.raises(DataError, match="not a zip"):
        scan_dataset(f)


def test_cache_gives_the_same_pixels(messy):
    a = scan_dataset(messy, size=24)
    b = scan_dataset(messy, size=24)
    assert np.array_equal(a.images, b.images) and [i.sha for i in a.items] == [i.sha for i in b.items]
    assert [s["path"] for s in a.skipped] == [s["path"] for s in b.skipped]


def test_same_pixels_under_two_classes_are_dropped_and_listed(tmp_path):
    root = make_synthetic_dataset(tmp_path / "d", per_class=3, size=32)
    src = next((root / "with_mask").glob("*.png"))
    (root / "without_mask" / "dup.png").write_bytes(src.read_bytes())
    ds = scan_dataset(root, size=16, use_cache=False)
    assert len(ds.conflicts) == 1
    assert {s["path"] for s in ds.skipped} == {src.relative_to(root).as_posix(), "without_mask/dup.png"}


def test_symlink_loops_and_dangling_links_are_listed_as_skipped(tmp_path):
    """A link loop, a link to nothing and a linked folder are never silently left out."""
    import os

    root = make_synthetic_dataset(tmp_path / "data", per_class=4, size=48)
    wm = root / "with_mask"
    os.symlink("loop", wm / "loop")  # points at itself
    os.symlink("missing.jpg", wm / "dangling.jpg")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "without_mask" / "linked")
    os.symlink("..", wm / "up")  # a folder loop: the class folder's parent
    ds = scan_dataset(root, size=32, use_cache=False)
    reasons = {s["path"]: s["reason"] for s in ds.skipped}
    assert reasons["with_mask/loop"] == "symbolic link loop"
    assert reasons["with_mask/dangling.jpg"].startswith("broken symbolic link (to missing.jpg)")
    assert "not followed" in reasons["without_mask/linked"]
    assert "not followed" in reasons["with_mask/up"]
    assert len(ds.items) == 8
    ds.write_manifest(tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert {s["path"] for s in manifest["skipped"]} == set(reasons)
    assert (tmp_path / "run" / "skipped.txt").read_text().count("\n") == 4
    assert "skipped 4 file(s)" in ds.summary_line()
