"""Zip bombs and broken archives (issue 12, finding 4): limits on size, ratio and members checked
before anything is written, all-or-nothing extraction, one-line errors for unsupported members
and a full disk, and nothing left in the cache after any failure."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facemask_edge.data.archive import ArchiveLimits, extract_zip
from facemask_edge.data.ingest import scan_dataset
from facemask_edge.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEMASK_EDGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*")] if cache.exists() else []


def _local_and_central(name: bytes, method: int, crc: int, csize: int, usize: int,
                       offset: int, flags: int = 0) -> tuple[bytes, bytes]:
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 0x21, crc, csize,
                        usize, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, method, 0, 0x21,
                          crc, csize, usize, len(name), 0, 0, 0, 0, 0, offset) + name
    return local, central


def zeros_bomb(path: Path, members: int = 3, member_bytes: int = (3 << 30) + (1 << 29),
               crc: bool = True) -> Path:
    """A real deflate zip of ``members`` files of zeros (3.5 GiB each by default: 10.5 GiB from
    about 10 MB). Built without compressing gigabytes: a full flush resets the deflate history,
    so every 16 MiB segment compresses to the same bytes, which are repeated. ``crc=False``
    stores a zero CRC (saves seconds; only for archives refused before any member is read)."""
    seg = 1 << 24
    assert member_bytes % seg == 0
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(bytes(seg)) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(bytes(seg)) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.flush()
    n = member_bytes // seg
    zeros, crc_value = bytes(seg), 0
    for _ in range(n if crc else 0):  # CRC of the zeros, chunk by chunk
        crc_value = zlib.crc32(zeros, crc_value)
    with open(path, "wb") as f:
        centrals = []
        for i in range(members):
            data_len = len(first) + len(again) * (n - 1) + len(tail)
            local, central = _local_and_central(f"zeros{i}.bin".encode(), 8, crc_value, data_len,
                                                member_bytes, f.tell())
            f.write(local)
            f.write(first)
            for _ in range(n - 1):
                f.write(again)
            f.write(tail)
            centrals.append(central)
        start = f.tell()
        cd = b"".join(centrals)
        f.write(cd)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, members, members, len(cd), start, 0))
    return path


def _image_zip(path: Path, extra: dict[str, bytes] | None = None, per_class: int = 3) -> Path:
    rng = np.random.RandomState(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for cls in ("with_mask", "without_mask"):
            for i in range(per_class):
                buf = io.BytesIO()
                Image.fromarray(rng.randint(0, 256, (16, 16, 3)).astype(np.uint8)).save(buf, "PNG")
                zf.writestr(f"data/{cls}/{i}.png", buf.getvalue())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def _patch_members(path: Path, *, method: int | None = None, flags: int | None = None) -> None:
    """Rewrite the compression method / flag bits of every member, local and central headers."""
    data = bytearray(path.read_bytes())
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        i = data.find(sig)
        while i >= 0:
            if method is not None:
                data[i + method_at:i + method_at + 2] = struct.pack("<H", method)
            if flags is not None:
                data[i + flag_at:i + flag_at + 2] = struct.pack("<H", flags)
            i = data.find(sig, i + 4)
    path.write_bytes(bytes(data))


def test_a_10_gib_bomb_is_refused_at_once_and_leaves_nothing(tmp_path, cache):
    bomb = zeros_bomb(tmp_path / "bomb.zip", crc=False)
    assert bomb.stat().st_size < 12 * 2 ** 20
    start = time.monotonic()
    with pytest.raises(DataError, match="expands to 10.50 GiB") as exc:
        scan_dataset(bomb)
    assert time.monotonic() - start < 10
    assert "FACEMASK_EDGE_MAX_ARCHIVE_BYTES" in str(exc.value)
    assert [p for p in _leftovers(cache) if p.is_file()] == []


def test_a_real_bomb_member_under_raised_limits_stops_at_the_byte_limit(tmp_path):
    """Declared sizes pass (limits raised), but the bytes written are counted too."""
    bomb = zeros_bomb(tmp_path / "one.zip", members=1, member_bytes=1 << 26)
    dest = tmp_path / "out"
    # Ratio raised: the 64 MiB member is within the byte limit and gets extracted, whole.
    extract_zip(bomb, dest, limits=ArchiveLimits(max_bytes=1 << 27, max_ratio=10 ** 6),
                show_progress=False)
    assert (dest / "zeros0.bin").stat().st_size == 1 << 26
    # A declared total under the limit but more bytes written than allowed: the running count
    # stops it at the limit (a lying size field would otherwise be the only guard).
    bomb.write_bytes(bomb.read_bytes())
    import facemask_edge.data.archive as archive

    orig = archive._check
    archive._check = lambda *a, **k: None  # pretend the declared sizes looked fine
    try:
        start = time.monotonic()
        with pytest.raises(DataError, match="expands past 1.0 MiB"):
            extract_zip(bomb, tmp_path / "out2", limits=ArchiveLimits(max_bytes=1 << 20),
                        show_progress=False)
        assert time.monotonic() - start < 2  # stopped early, did not inflate 64 MiB first
    finally:
        archive._check = orig
    assert list(tmp_path.glob("out2*")) == []


def test_ratio_and_member_limits_trigger_with_small_files(tmp_path, cache, monkeypatch):
    z = _image_zip(tmp_path / "ratio.zip", {"data/notes.bin": bytes(4 << 20)})
    with pytest.raises(DataError, match="expands .* times .*FACEMASK_EDGE_MAX_ARCHIVE_RATIO"):
        scan_dataset(z)
    monkeypatch.setenv("FACEMASK_EDGE_MAX_ARCHIVE_RATIO", "100000")
    assert len(scan_dataset(z, size=None).items) == 6
    monkeypatch.setenv("FACEMASK_EDGE_MAX_ARCHIVE_MEMBERS", "5")
    z2 = _image_zip(tmp_path / "many.zip")
    with pytest.raises(DataError, match="6 entries \\(limit 5\\)"):
        scan_dataset(z2)


@pytest.mark.parametrize("method,flags,message", [(9, None, "Deflate64 compression"),
                                                  (None, 1, "is encrypted")])
def test_unsupported_members_are_one_line(tmp_path, cache, method, flags, message):
    z = _image_zip(tmp_path / "odd.zip")
    _patch_members(z, method=method, flags=flags)
    with pytest.raises(DataError, match=message) as exc:
        scan_dataset(z)
    assert "\n" not in str(exc.value)
    assert [p for p in _leftovers(cache) if p.is_file()] == []


def test_a_corrupt_member_midway_leaves_nothing(tmp_path, cache):
    z = _image_zip(tmp_path / "bad.zip", per_class=4)
    data = bytearray(z.read_bytes())
    with zipfile.ZipFile(z) as zf:
        info = zf.infolist()[5]
    at = info.header_offset + 30 + len(info.filename) + 10
    data[at] ^= 0xFF  # flip a byte inside the sixth member's compressed data
    z.write_bytes(bytes(data))
    with pytest.raises(DataError):
        scan_dataset(z)
    assert [p for p in _leftovers(cache) if p.is_file()] == []


def test_a_file_size_limit_while_extracting_is_one_line_and_cleaned(tmp_path):
    """A real write failure (RLIMIT_FSIZE: EFBIG, the same path as ENOSPC) in a subprocess."""
    z = _image_zip(tmp_path / "big.zip", {"data/big.bin": os.urandom(3 << 20)})
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        from facemask_edge.data.archive import extract_zip
        from facemask_edge.errors import DataError
        try:
            extract_zip({str(z)!r}, {str(tmp_path / "out")!r}, show_progress=False)
        except DataError as exc:
            print("error:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.stdout.startswith("error: no space left to extract big.zip"), out
    assert out.stdout.count("\n") == 1
    assert list(tmp_path.glob("out*")) == []


def test_disk_full_is_one_line_and_cleaned(tmp_path):
    """ENOSPC from a real 1 MiB tmpfs (needs mount rights: root in a container)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        z = _image_zip(tmp_path / "big.zip", {"data/big.bin": os.urandom(3 << 20)})
        with pytest.raises(DataError, match="no space left .*\\(.*MiB written") as exc:
            extract_zip(z, mnt / "out", show_progress=False)
        assert "\n" not in str(exc.value)
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
