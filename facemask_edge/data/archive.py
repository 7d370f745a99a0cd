"""Extract a zip archive safely: bounded size, ratio and member count, all or nothing.

The one place that unpacks archives (``--data FILE.zip`` in ``ingest`` and the downloaded data
set in ``download``). A zip is untrusted input: before anything is written, the declared sizes
are checked against the ``archive_bytes``, ``archive_ratio`` and ``archive_members`` limits
(``facemask_edge.limits``), so a 10 MB file declaring 10 GiB is refused at once; the members are
then extracted one by one into a temporary folder next to the destination, counting the bytes
actually written (zipfile stops each member at its declared size and checks its CRC), and the
folder is renamed into place only when everything succeeded. Any failure (a corrupt member, a
full disk, Ctrl-C) removes the temporary folder, so the cache never holds half an archive.
Members that would land outside the destination (absolute paths, ``..``) are skipped; members
this Python cannot extract (Deflate64, PKWARE-encrypted) are refused with one line.
"""

from __future__ import annotations

import errno
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from facemask_edge.errors import DataError
from facemask_edge.limits import limit

__all__ = ["ArchiveLimits", "extract_zip", "safe_members"]

_SUPPORTED = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
              zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
_METHOD_NAMES = {9: "Deflate64", 6: "Implode", 1: "Shrink", 93: "Zstandard", 95: "XZ",
                 98: "PPMd", 99: "AES encryption"}
_RATIO_FLOOR = 1 << 20  # members smaller than this may compress well without suspicion
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds for one extraction (``None``: the ``FACEMASK_EDGE_*`` variable or the default).

    Attributes:
        max_bytes: total uncompressed bytes.
        max_ratio: uncompressed / compressed, for the archive and each member over 1 MiB.
        max_members: entries in the archive.
    """

    max_bytes: int | None = None
    max_ratio: float | None = None
    max_members: int | None = None

    def resolved(self) -> tuple[int, float, int]:
        return (int(limit("archive_bytes", self.max_bytes)),
                float(limit("archive_ratio", self.max_ratio)),
                int(limit("archive_members", self.max_members)))


def safe_members(zf: zipfile.ZipFile, subdir: str | None = None
                 ) -> tuple[list[zipfile.ZipInfo], str | None]:
    """Members to extract (only the first ``*/subdir/`` folder when the archive has one) and that
    folder's prefix; members that would be written outside the destination are left out."""
    names = zf.infolist()
    prefix = None
    if subdir:
        want = subdir.strip("/")
        cands = set()
        for n in names:
            parts = n.filename.split("/")
            if want in parts[:-1]:
                cands.add("/".join(parts[:parts.index(want) + 1]) + "/")
        prefix = min(cands, key=lambda c: (c.count("/"), c)) if cands else None
    out = []
    for n in names:
        if prefix and not n.filename.startswith(prefix):
            continue
        p = PurePosixPath(n.filename.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
            continue  # never write outside the destination
        out.append(n)
    return out, prefix


def _mib(n: float) -> str:
    return f"{n / 2 ** 20:,.1f} MiB" if n < 2 ** 30 else f"{n / 2 ** 30:,.2f} GiB"


def _check(archive: Path, members: list[zipfile.ZipInfo], total_members: int,
           limits: ArchiveLimits) -> None:
    max_bytes, max_ratio, max_members = limits.resolved()
    how = "FACEMASK_EDGE_MAX_ARCHIVE_{} raises it if the archive is trusted"
    if total_members > max_members:
        raise DataError(f"{archive.name} has {total_members:,} entries (limit {max_members:,})",
                        how.format("MEMBERS"))
    for m in members:
        if m.flag_bits & 0x1:
            raise DataError(f"{archive.name}: member {m.filename!r} is encrypted, which is not "
                            "supported", "re-pack the archive without a password")
        if m.compress_type not in _SUPPORTED:
            name = _METHOD_NAMES.get(m.compress_type, f"method {m.compress_type}")
            raise DataError(f"{archive.name}: member {m.filename!r} uses {name} compression, "
                            "which is not supported",
                            "re-pack the archive with ordinary deflate (zip -r, or Python's "
                            "zipfile), or extract it with another tool and pass the folder")
    total = sum(m.file_size for m in members)
    if total > max_bytes:
        raise DataError(f"{archive.name} expands to {_mib(total)} (limit {_mib(max_bytes)})",
                        how.format("BYTES"))
    packed = max(1, os.path.getsize(archive))
    if total > _RATIO_FLOOR and total / packed > max_ratio:
        raise DataError(f"{archive.name} expands {total / packed:,.0f} times ({_mib(packed)} to "
                        f"{_mib(total)}; limit {max_ratio:g}): a zip bomb?", how.format("RATIO"))
    for m in members:
        if m.file_size > _RATIO_FLOOR and m.file_size / max(1, m.compress_size) > max_ratio:
            raise DataError(f"{archive.name}: member {m.filename!r} expands "
                            f"{m.file_size / max(1, m.compress_size):,.0f} times (limit "
                            f"{max_ratio:g}): a zip bomb?", how.format("RATIO"))


def extract_zip(archive: str | Path, dest: str | Path, subdir: str | None = None,
                limits: ArchiveLimits | None = None, marker: str | None = None,
                show_progress: bool = True) -> str | None:
    """Extract ``archive`` into the folder ``dest``, all or nothing.

    Args:
        archive: the zip file.
        dest: the folder to create (replaced if it exists).
        subdir: extract only the first folder of this name, when the archive has one.
        limits: size, ratio and member bounds (default: the documented limits).
        marker: name of a file written in ``dest`` last, holding the extracted prefix
            (``.complete`` for the caches), so a reader can tell a finished extraction.
        show_progress: show a progress bar.

    Returns:
        The prefix of ``subdir`` inside the archive (``"repo-main/dataset"``), or None.

    Raises:
        DataError: not a zip, over a limit, an unsupported or corrupt member, or the disk is
            full; nothing is left behind.
    """
    from facemask_edge.progress import progress

    archive, dest = Path(archive), Path(dest)
    limits = limits or ArchiveLimits()
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    written = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            members, prefix = safe_members(zf, subdir)
            _check(archive, members, len(zf.infolist()), limits)
            max_bytes = limits.resolved()[0]
            tmp.mkdir(parents=True)  # only now: a refused archive leaves no folder behind
            root = tmp.resolve()
            with progress(f"extracting {archive.name}", total=len(members)) \
                    if show_progress else _Quiet() as bar:
                for m in members:
                    target = (tmp / m.filename.replace("\\", "/")).resolve()
                    if root not in target.parents and target != root:
                        continue
                    if m.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                    else:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(m) as src, open(target, "wb") as out:
                            while block := src.read(_CHUNK):
                                written += len(block)
                                if written > max_bytes:  # declared sizes lied
                                    raise DataError(f"{archive.name} expands past "
                                                    f"{_mib(max_bytes)}", "a zip bomb?")
                                out.write(block)
                    bar.advance()
        rel = prefix.rstrip("/") if prefix else ""
        if marker:
            (tmp / marker).write_text(rel + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
        return rel or None
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive} is not a valid zip archive ({exc})",
                        "re-download it, or pass the extracted folder") from None
    except (NotImplementedError, RuntimeError) as exc:  # zipfile: unsupported method/password
        raise DataError(f"cannot extract {archive.name}: {exc}",
                        "extract it with another tool and pass the folder") from None
    except (EOFError, zipfile.LargeZipFile) as exc:
        raise DataError(f"{archive.name} is corrupt ({type(exc).__name__}: {exc})",
                        "re-download it, or pass the extracted folder") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise DataError(f"no space left to extract {archive.name} into {dest.parent} "
                            f"({_mib(written)} written, then {exc.strerror or exc})",
                            "free disk space, or point FACEMASK_EDGE_CACHE at a larger disk") \
                from None
        raise DataError(f"cannot extract {archive.name} into {dest.parent}: "
                        f"{exc.strerror or exc}", "check the folder's permissions") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Quiet:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def advance(self, n: int = 1) -> None:
        pass
