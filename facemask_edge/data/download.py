"""The default data set, downloaded once into the user cache: checksummed and resumable.

With no ``--data``, the pipeline uses the ``dataset/`` folder of the public GitHub repository
chandrikadeb7/Face-Mask-Detection (MIT licence), fetched as the archive GitHub serves for its
``master`` branch. ``--data URL`` fetches any other zip the same way.

- Resumable: the download goes to ``<name>.part``; a new attempt asks for the rest with an HTTP
  ``Range`` request (a server that ignores it sends everything again, which is also handled).
- Checksummed: when an expected SHA-256 is pinned (``DEFAULT_SHA256`` for the default archive, or
  the ``sha256`` argument) the file must match it. When nothing is pinned, the SHA-256 of the first
  complete download is recorded next to it (``<name>.sha256``, trust on first use) and every later
  use verifies the file against that record, so a corrupted or swapped cache file is caught.
- Offline or unreachable: one :class:`DataError` line that says to pass ``--data``.

Cache layout (``facemask_edge.data.ingest.cache_dir()``)::

    downloads/<key>-<file name>.zip       the archive (``.part`` while incomplete)
    downloads/<key>-<file name>.zip.sha256 its recorded checksum
    datasets/<sha256[:16]>/               the extracted data folders (``.complete`` when done)
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from facemask_edge.artifacts.files import sha256_file  # noqa: F401 - re-exported
from facemask_edge.errors import DataError
from facemask_edge.progress import log, progress

__all__ = ["DEFAULT_URL", "DEFAULT_SHA256", "DEFAULT_SUBDIR", "Download", "download",
           "fetch_dataset", "resolve_data", "is_url", "sha256_file"]

#: The GitHub archive of chandrikadeb7/Face-Mask-Detection, master branch. ``$FACEMASK_EDGE_DATA_URL``
#: overrides it (a mirror, or a local server in tests).
DEFAULT_URL = "https://codeload.github.com/chandrikadeb7/Face-Mask-Detection/zip/refs/heads/master"
#: Pin the archive's SHA-256 here once it is known (hex). ``None``: trust on first download, then
#: verify every later use against the recorded value.
DEFAULT_SHA256: str | None = None
#: The folder of the archive that holds the class folders.
DEFAULT_SUBDIR = "dataset"

_CHUNK = 1 << 16
_USER_AGENT = "facemask-edge (+https://github.com/chandrikadeb7/Face-Mask-Detection data download)"


@dataclass
class Download:
    """A finished download: where it is, its checksum, and how it got there."""

    path: Path
    sha256: str
    bytes: int
    url: str
    resumed_from: int = 0  # bytes already there when this call started (0: a fresh download)
    cached: bool = False  # already complete in the cache: nothing was fetched
    pinned: bool = False  # checked against a pinned checksum (else against the first download's)


def is_url(text: str | os.PathLike | None) -> bool:
    """True for ``http://`` and ``https://`` addresses."""
    return isinstance(text, str) and text.lower().startswith(("http://", "https://"))




def _cache() -> Path:
    from facemask_edge.data.ingest import cache_dir

    return cache_dir()


def _file_name(url: str) -> str:
    """A cache file name for ``url``: a short hash of the URL plus a readable tail."""
    parts = urllib.parse.urlsplit(url)
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", parts.path.rstrip("/").rsplit("/", 1)[-1] or "archive")[-60:]
    if not tail.lower().endswith(".zip"):
        tail += ".zip"
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f"{key}-{tail}"


def _offline_error(url: str, why: str) -> DataError:
    return DataError(f"cannot download {url}: {why}",
                     "offline? pass --data DIR with one sub-folder per class, or --data FILE.zip")


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return exc  # the caller restarts from zero
        raise DataError(f"cannot download {url}: HTTP {exc.code} {exc.reason}",
                        "check the URL, or pass --data DIR or --data FILE.zip") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        why = getattr(reason, "strerror", None) or str(reason)
        raise _offline_error(url, why) from None
    except (socket.timeout, TimeoutError):
        raise _offline_error(url, f"no answer within {timeout:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _offline_error(url, f"{type(exc).__name__}: {exc}") from None


def _fetch_once(url: str, part: Path, timeout: float) -> int:
    """Fetch into ``part`` (appending when the server honours the range). Returns the bytes it
    held before. Raises ``_Interrupted`` when the connection ends early."""
    offset = part.stat().st_size if part.exists() else 0
    resp = _open(url, offset, timeout)
    if isinstance(resp, urllib.error.HTTPError):  # 416: the part is not a prefix we can extend
        part.unlink(missing_ok=True)
        offset = 0
        resp = _open(url, 0, timeout)
    with resp:
        status = resp.status
        if offset and status == 206:
            m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                part.unlink(missing_ok=True)
                raise _Interrupted("the server answered another byte range; starting over")
            mode = "ab"
        else:
            if offset:
                log(f"  the server does not resume downloads: starting {part.name} over")
            offset, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        expected = offset + int(length) if length and length.isdigit() else None
        done = offset
        with open(part, mode) as f, progress(f"downloading {urllib.parse.urlsplit(url).netloc}",
                                             total=expected) as bar:
            if offset:
                bar.advance(offset)
            while True:
                try:
                    block = resp.read(_CHUNK)
                except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError,
                        OSError) as exc:
                    raise _Interrupted(f"connection lost after {done:,} bytes ({type(exc).__name__})") from None
                if not block:
                    break
                f.write(block)
                done += len(block)
                bar.advance(len(block))
        if expected is not None and done < expected:
            raise _Interrupted(f"connection closed after {done:,} of {expected:,} bytes")
    return offset


class _Interrupted(Exception):
    pass


def download(url: str, dest: Path | None = None, sha256: str | None = None, timeout: float = 30.0,
             retries: int = 3, retry_wait: float = 1.0) -> Download:
    """Download ``url`` into the cache (or ``dest``), resuming a partial file, and verify it.

    Args:
        url: an ``http(s)://`` address of a zip archive.
        dest: the file to write (default: ``cache_dir()/downloads/<key>-<name>.zip``).
        sha256: the expected SHA-256 (hex). ``None``: the first complete download's checksum is
            recorded in ``<dest>.sha256`` and later calls verify the file against it.
        timeout: seconds to wait for the server at each step.
        retries: further attempts (each resuming) when the connection drops mid-way.
        retry_wait: seconds between attempts (doubling).

    Returns:
        A :class:`Download`.

    Raises:
        DataError: unreachable/offline, an HTTP error, a checksum mismatch, or the transfer
            kept breaking (the partial file is kept: calling again resumes).
    """
    dest = Path(dest) if dest else _cache() / "downloads" / _file_name(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    record = dest.with_name(dest.name + ".sha256")
    pinned = sha256.lower() if sha256 else None
    recorded = record.read_text().split()[0].lower() if record.exists() else None
    expected = pinned or recorded

    if dest.exists():
        got = sha256_file(dest)
        if expected is None or got == expected:
            if expected is None:
                record.write_text(f"{got}  {url}\n")
            return Download(dest, got, dest.stat().st_size, url, cached=True, pinned=bool(pinned))
        dest.unlink()  # the cached file is damaged or stale: fetch it again
        log(f"  {dest.name} does not match its checksum: downloading it again")

    started = part.stat().st_size if part.exists() else 0
    if started:
        log(f"resuming the download of {url} at {started:,} bytes")
    else:
        log(f"downloading {url}")
    wait = retry_wait
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout)
            break
        except _Interrupted as exc:
            if attempt == retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DataError(f"download of {url} interrupted: {exc}",
                                f"run the same command again to resume ({kept:,} bytes kept)") from None
            log(f"  {exc}; resuming in {wait:g} s")
            time.sleep(wait)
            wait *= 2

    got = sha256_file(part)
    if expected is not None and got != expected:
        part.unlink(missing_ok=True)
        where = "pinned" if pinned else f"recorded at the first download ({record})"
        raise DataError(f"checksum mismatch for {url}: got sha256 {got[:16]}..., expected "
                        f"{expected[:16]}... ({where})",
                        "the file was deleted; try again, or if the server's file changed on purpose "
                        + ("update the pinned checksum" if pinned else f"delete {record}"))
    part.replace(dest)
    if not pinned and recorded is None:
        record.write_text(f"{got}  {url}\n")
        log(f"  sha256 {got} (recorded; later uses are checked against it)")
    return Download(dest, got, dest.stat().st_size, url, resumed_from=started, pinned=bool(pinned))


def _safe_members(zf: zipfile.ZipFile, subdir: str | None) -> tuple[list[zipfile.ZipInfo], str | None]:
    """Members to extract (only ``*/subdir/`` when the archive has one) and that folder's prefix."""
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
        p = Path(n.filename)
        if p.is_absolute() or ".." in p.parts:
            continue  # never write outside the destination
        out.append(n)
    return out, prefix


def _extract(archive: Download, subdir: str | None) -> Path:
    dest = _cache() / "datasets" / archive.sha256[:16]
    done = dest / ".complete"
    if done.exists():
        rel = done.read_text().strip()
        return dest / rel if rel else dest
    if dest.exists():
        shutil.rmtree(dest)  # an interrupted extraction: start over
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive.path) as zf:
            members, prefix = _safe_members(zf, subdir)
            with progress(f"extracting {archive.path.name}", total=len(members)) as bar:
                for m in members:
                    zf.extract(m, tmp)
                    bar.advance()
    except zipfile.BadZipFile:
        archive.path.unlink(missing_ok=True)
        raise DataError(f"{archive.url} is not a valid zip archive (deleted from the cache)",
                        "check the URL; --data URL must point at a .zip") from None
    tmp.replace(dest)
    rel = prefix.rstrip("/") if prefix else ""
    done.write_text(rel + "\n")
    return dest / rel if rel else dest


def fetch_dataset(url: str | None = None, sha256: str | None = None, subdir: str | None = None,
                  timeout: float = 30.0) -> tuple[Path, Download]:
    """Download (once) and extract a zipped data set; return its data folder and the download.

    With no ``url``, the default archive (``$FACEMASK_EDGE_DATA_URL`` or :data:`DEFAULT_URL`),
    checked against :data:`DEFAULT_SHA256` when pinned, and its ``dataset/`` folder.
    For another URL, the folder named ``subdir`` when given and present, else the whole archive
    (``scan_dataset`` finds the class folders a few levels down).
    """
    if url is None:
        url = os.environ.get("FACEMASK_EDGE_DATA_URL") or DEFAULT_URL
        sha256 = sha256 or (DEFAULT_SHA256 if url == DEFAULT_URL else None)
        subdir = subdir or DEFAULT_SUBDIR
    got = download(url, sha256=sha256, timeout=timeout)
    return _extract(got, subdir), got


def resolve_data(data: str | None, timeout: float = 30.0) -> tuple[str, dict]:
    """Turn a ``--data`` value into a local path: ``None`` -> the default data set (downloaded),
    a URL -> that zip (downloaded), anything else -> itself.

    Returns:
        ``(path, info)`` where ``info`` says where the data came from (for summaries).
    """
    if data is not None and not is_url(data):
        return str(data), {"source": "path", "path": str(data)}
    path, got = fetch_dataset(data, timeout=timeout)
    return str(path), {"source": "download", "url": got.url, "sha256": got.sha256,
                       "bytes": got.bytes, "archive": str(got.path), "path": str(path),
                       "checksum": "pinned" if got.pinned else "recorded at first download"}
