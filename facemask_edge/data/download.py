"""The default data set, downloaded once into the user cache: checksummed and resumable.

With no ``--data``, the pipeline uses the ``dataset/`` folder of the public GitHub repository
chandrikadeb7/Face-Mask-Detection (MIT licence), fetched as the archive GitHub serves for commit
``7e50074`` (the ``master`` head the project was developed against; a branch archive would change
under us). ``--data URL`` fetches any other zip the same way.

- Resumable: the download goes to ``<name>.part``; a new attempt asks for the rest with an HTTP
  ``Range`` request (a server that ignores it sends everything again, which is also handled).
- Checksummed: when an expected SHA-256 is pinned (the ``sha256`` argument) the file must match
  it. GitHub does not promise byte-stable archives, so for the default data set the *extracted
  files* are pinned instead: :data:`DEFAULT_TREE_SHA256` digests the sorted ``sha256  path`` lines
  of every file of ``dataset/`` at that commit (computed from the repository's git objects, each
  checked against its git blob id; one blob, ``with_mask/with_mask057.jpg``, was not available
  where this was computed, so its line holds its git blob id, ``git-blob-sha1:<id>``, which the
  check computes the same way). When nothing is pinned, the SHA-256 of the first download is
  recorded next to it (``<name>.sha256``, trust on first use), but only once the archive has been
  extracted and checked: a truncated or corrupt first download is deleted, not trusted. Every
  later use verifies the file against that record.
- Complete: a body shorter than its ``Content-Length`` is resumed or refused; a body without one
  is only trusted once the archive verifies (pinned checksum, or a zip that extracts whole).
- Bounded in time: ``deadline`` seconds for the whole download, retries included (``limits``:
  ``FACEMASK_EDGE_DOWNLOAD_DEADLINE``), so a server trickling a byte a second is cut off.
- Offline or unreachable: one :class:`DataError` line that says to pass ``--data``.

Cache layout (``facemask_edge.paths.cache_dir()``)::

    downloads/<key>-<file name>.zip       the archive (``.part`` while incomplete)
    downloads/<key>-<file name>.zip.sha256 its recorded checksum
    datasets/<sha256[:16]>/               the extracted data folders (``.complete`` when done)
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from facemask_edge.artifacts.files import sha256_file  # noqa: F401 - re-exported
from facemask_edge.data.archive import extract_zip
from facemask_edge.errors import DataError
from facemask_edge.limits import limit
from facemask_edge.progress import log, progress

__all__ = ["DEFAULT_URL", "DEFAULT_SHA256", "DEFAULT_SUBDIR", "DEFAULT_TREE_SHA256", "Download",
           "download", "fetch_dataset", "resolve_data", "is_url", "sha256_file", "tree_digest"]

#: The commit of chandrikadeb7/Face-Mask-Detection whose ``dataset/`` is the default data set.
DEFAULT_COMMIT = "7e500749401bad4bb338790fbdb89b58e41ef2d9"
#: The GitHub archive of that commit. ``$FACEMASK_EDGE_DATA_URL`` overrides it (a mirror, or a
#: local server in tests; the tree pin below then does not apply).
DEFAULT_URL = f"https://codeload.github.com/chandrikadeb7/Face-Mask-Detection/zip/{DEFAULT_COMMIT}"
#: The archive's own SHA-256, if it were known (GitHub regenerates archives; see the tree pin).
DEFAULT_SHA256: str | None = None
#: SHA-256 of the sorted ``"<sha256>  <path>\n"`` lines of the 4,095 files under ``dataset/`` at
#: :data:`DEFAULT_COMMIT` (paths relative to ``dataset/``, sorted as UTF-8 bytes).
DEFAULT_TREE_SHA256 = "2c8e0f24ec9baa5e7ebcc47a3dd2c0c6f95880847a070ea05ff051c43608c88f"
DEFAULT_TREE_FILES = 4095
#: Files pinned by git blob id because their bytes were not available to compute a SHA-256.
_TREE_BLOB_PINS = {"with_mask/with_mask057.jpg"}
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
    record: Path | None = None  # the trust-on-first-use record (written once verified)


def is_url(text: str | os.PathLike | None) -> bool:
    """True for ``http://`` and ``https://`` addresses."""
    return isinstance(text, str) and text.lower().startswith(("http://", "https://"))




def _cache() -> Path:
    from facemask_edge.paths import cache_dir

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


class _Deadline:
    """The overall time budget of one download."""

    def __init__(self, url: str, seconds: float):
        self.url, self.seconds = url, seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, done: int, expected: int | None) -> None:
        if self.left() <= 0:
            of = f" of {expected:,}" if expected is not None else ""
            raise DataError(f"download of {self.url} took longer than its {self.seconds:g} s "
                            f"deadline ({done:,}{of} bytes; kept for the next attempt)",
                            "a slow or stalled server? run again to resume, raise "
                            "FACEMASK_EDGE_DOWNLOAD_DEADLINE, or pass --data FILE.zip")


def _fetch_once(url: str, part: Path, timeout: float, deadline: _Deadline) -> int:
    """Fetch into ``part`` (appending when the server honours the range). Returns the bytes it
    held before. Raises ``_Interrupted`` when the connection ends early."""
    offset = part.stat().st_size if part.exists() else 0
    deadline.check(offset, None)
    resp = _open(url, offset, max(0.1, min(timeout, deadline.left())))
    if isinstance(resp, urllib.error.HTTPError):  # 416: the part is not a prefix we can extend
        part.unlink(missing_ok=True)
        offset = 0
        resp = _open(url, 0, max(0.1, min(timeout, deadline.left())))
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
                deadline.check(done, expected)
                try:
                    # read1: whatever one receive brings, so a trickle still reaches the deadline
                    # check (read(n) would wait for n bytes).
                    block = resp.read1(_CHUNK)
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
             retries: int = 3, retry_wait: float = 1.0, deadline: float | None = None,
             verify: Callable[[Download], None] | None = None) -> Download:
    """Download ``url`` into the cache (or ``dest``), resuming a partial file, and verify it.

    Args:
        url: an ``http(s)://`` address of a zip archive.
        dest: the file to write (default: ``cache_dir()/downloads/<key>-<name>.zip``).
        sha256: the expected SHA-256 (hex). ``None``: the first download's checksum is recorded
            in ``<dest>.sha256`` (once ``verify`` accepted the file) and later calls verify the
            file against it.
        timeout: seconds to wait for the server at each step.
        retries: further attempts (each resuming) when the connection drops mid-way.
        retry_wait: seconds between attempts (doubling).
        deadline: seconds for the whole call, retries included (default: the
            ``download_seconds`` limit, ``FACEMASK_EDGE_DOWNLOAD_DEADLINE``).
        verify: called with the finished download before its checksum is trusted; if it raises,
            the file is deleted and nothing is recorded (a truncated body with no
            ``Content-Length`` fails here).

    Returns:
        A :class:`Download`.

    Raises:
        DataError: unreachable/offline, an HTTP error, a checksum mismatch, a file ``verify``
            refused, the deadline passed, or the transfer kept breaking (the partial file is
            kept: calling again resumes).
    """
    dest = Path(dest) if dest else _cache() / "downloads" / _file_name(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    record = dest.with_name(dest.name + ".sha256")
    pinned = sha256.lower() if sha256 else None
    recorded = record.read_text().split()[0].lower() if record.exists() else None
    expected = pinned or recorded
    clock = _Deadline(url, float(limit("download_seconds", deadline)))

    def trusted(got: Download) -> Download:
        """Verify, then (trust on first use) record; delete the file if it does not verify."""
        if verify is not None:
            try:
                verify(got)
            except BaseException:
                dest.unlink(missing_ok=True)
                raise
        if expected is None:
            record.write_text(f"{got.sha256}  {url}\n")
            log(f"  sha256 {got.sha256} (recorded; later uses are checked against it)")
        return got

    if dest.exists():
        got = sha256_file(dest)
        if expected is None or got == expected:
            return trusted(Download(dest, got, dest.stat().st_size, url, cached=True,
                                    pinned=bool(pinned), record=record))
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
            _fetch_once(url, part, timeout, clock)
            break
        except _Interrupted as exc:
            if attempt == retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DataError(f"download of {url} interrupted: {exc}",
                                f"run the same command again to resume ({kept:,} bytes kept)") from None
            log(f"  {exc}; resuming in {wait:g} s")
            time.sleep(max(0.0, min(wait, clock.left())))
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
    return trusted(Download(dest, got, dest.stat().st_size, url, resumed_from=started,
                            pinned=bool(pinned), record=record))


def tree_digest(root: Path) -> tuple[str, int]:
    """``(digest, files)`` of a folder, as :data:`DEFAULT_TREE_SHA256` is computed: SHA-256 of
    the sorted ``"<sha256>  <relative path>\n"`` lines (git blob ids for ``_TREE_BLOB_PINS``)."""
    lines = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel == ".complete" or p.is_symlink():
                continue
            if rel in _TREE_BLOB_PINS:
                data = p.read_bytes()
                h = "git-blob-sha1:" + hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            else:
                h = sha256_file(p)
            lines.append((os.fsencode(rel), h))
    lines.sort()
    body = b"".join(h.encode() + b"  " + rel + b"\n" for rel, h in lines)
    return hashlib.sha256(body).hexdigest(), len(lines)


def _extract(archive: Download, subdir: str | None, tree: str | None = None) -> Path:
    """Extract (once) into ``datasets/<sha256[:16]>``; with ``tree``, check the extracted folder
    against that pinned digest first (the folder is removed if it does not match)."""
    dest = _cache() / "datasets" / archive.sha256[:16]
    done = dest / ".complete"
    if done.exists():
        rel = done.read_text().strip()
        return dest / rel if rel else dest
    rel = extract_zip(archive.path, dest, subdir=subdir, marker=".complete") or ""
    folder = dest / rel if rel else dest
    if tree is not None:
        digest, files = tree_digest(folder)
        if digest != tree:
            import shutil

            shutil.rmtree(dest, ignore_errors=True)
            raise DataError(f"{archive.url} does not hold the pinned data set ({files} files "
                            f"under {subdir or '/'}, digest {digest[:16]}..., expected "
                            f"{DEFAULT_TREE_FILES} files, {tree[:16]}...)",
                            "the archive was deleted; try again, or pass --data DIR")
    return folder


def fetch_dataset(url: str | None = None, sha256: str | None = None, subdir: str | None = None,
                  timeout: float = 30.0, deadline: float | None = None
                  ) -> tuple[Path, Download]:
    """Download (once) and extract a zipped data set; return its data folder and the download.

    With no ``url``, the default archive (``$FACEMASK_EDGE_DATA_URL`` or :data:`DEFAULT_URL`)
    and its ``dataset/`` folder; from :data:`DEFAULT_URL` the extracted files must match
    :data:`DEFAULT_TREE_SHA256`. For another URL, the folder named ``subdir`` when given and
    present, else the whole archive (``scan_dataset`` finds the class folders a few levels down).
    The archive's checksum is recorded (trust on first use) only after it extracted (and matched
    the pinned tree): a bad first download is deleted and cannot lock out later ones.
    """
    tree = None
    if url is None:
        url = os.environ.get("FACEMASK_EDGE_DATA_URL") or DEFAULT_URL
        sha256 = sha256 or (DEFAULT_SHA256 if url == DEFAULT_URL else None)
        tree = DEFAULT_TREE_SHA256 if url == DEFAULT_URL else None
        subdir = subdir or DEFAULT_SUBDIR
    folder: list[Path] = []
    got = download(url, sha256=sha256, timeout=timeout, deadline=deadline,
                   verify=lambda d: folder.append(_extract(d, subdir, tree)))
    got.pinned = got.pinned or tree is not None
    return folder[0], got


def resolve_data(data, timeout: float = 30.0) -> tuple[str | list[str], dict]:
    """Turn a ``--data`` value into a local path: ``None`` -> the default data set (downloaded),
    a URL -> that zip (downloaded), anything else -> itself; a list of them (several roots,
    merged by class name in ``scan_dataset``) -> the list of their paths.

    Returns:
        ``(path, info)`` where ``info`` says where the data came from (for summaries); for a
        list, ``info["roots"]`` holds each root's.
    """
    if isinstance(data, (list, tuple)):
        if len(data) == 1:
            return resolve_data(data[0], timeout)
        got = [resolve_data(d, timeout) for d in data]
        return [p for p, _ in got], {"source": "several", "roots": [i for _, i in got]}
    if data is not None and not is_url(data):
        return str(data), {"source": "path", "path": str(data)}
    path, got = fetch_dataset(data, timeout=timeout)
    return str(path), {"source": "download", "url": got.url, "sha256": got.sha256,
                       "bytes": got.bytes, "archive": str(got.path), "path": str(path),
                       "checksum": "pinned" if got.pinned else "recorded at first download"}
