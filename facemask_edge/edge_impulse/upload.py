"""Upload a face-mask data set to an Edge Impulse project, once, resumably.

Each usable image (``scan_dataset``: every file decoded once; files that do not decode are listed,
not sent) goes to the ingestion service as one ``multipart/form-data`` POST to
``/api/{training|testing|split}/files`` with ``x-api-key``, ``x-label`` (its class folder, URI
encoded like the Edge Impulse CLI does) and ``x-disallow-duplicates: 1``.

Exactly once, with retries. A request that times out or loses its connection may or may not have
been stored; retrying it blindly could store the image twice. ``x-disallow-duplicates`` makes the
service refuse a second copy of the same bytes ("An item with this hash already exists"), so a
retry is safe: its answer either stores the image or confirms that it is already there. Files with
byte-identical content are therefore sent once (the service would refuse the copies anyway) and
reported as copies. The local :class:`~facemask_edge.edge_impulse.ledger.Ledger` remembers every
confirmed content hash, so a re-run, or a run after an interruption, sends nothing that finished.

Why not ``edgeimpulse.data.upload_samples``: it builds the same request (we keep its path,
headers and ``data`` field name) but returns only the JSON body of a failure, so the status code
and ``Retry-After`` of a 429 are lost; it has no retries and no per-sample completion hook for the
ledger; and importing ``edgeimpulse`` imports TensorFlow (seconds) for what is an HTTP POST. So
this module calls the ingestion API with ``requests`` directly (as :mod:`.studio` does for the
studio API). Each upload also carries ``x-metadata`` (source path, sha256, split part, run id),
which ``ei status`` uses to match samples to files.
"""

from __future__ import annotations

import email.utils
import io
import json
import os
import random
import re
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from facemask_edge.artifacts.files import sha256_file
from facemask_edge.data.ingest import scan_dataset
from facemask_edge.data.splits import load_split, split_indices
from facemask_edge.edge_impulse.config import (KEY_HINT, EIConfig, RedirectRefused, ei_session,
                                               unreachable)
from facemask_edge.edge_impulse.ledger import Ledger
from facemask_edge.edge_impulse.redact import redact_clip, sanitized
from facemask_edge.errors import DataError, EdgeImpulseError
from facemask_edge.progress import progress

__all__ = ["CATEGORIES", "UploadItem", "UploadPlan", "plan_upload", "RetryPolicy",
           "UploadSummary", "upload_dataset", "make_session"]

CATEGORIES = ("split", "training", "testing")
_DUPLICATE = "already exists"
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png"}  # sent as they are; others become PNG


@dataclass
class UploadItem:
    """One image content to send.

    Attributes:
        path: file path relative to the data root (the first file with these bytes).
        label: class folder name, sent as ``x-label``.
        category: ``training``, ``testing`` or ``split`` (the project's own split).
        sha256: hash of the file's bytes: the ledger key.
        format: decoded format (``JPEG``, ``PNG``, ``WEBP``...).
        copies: other files with exactly the same bytes (not sent).
        split: the run's split part (``train``/``val``/``test``) or the category.
        run_id: the run folder's name with ``--split-from``, else ``""``.
    """

    path: str
    label: str
    category: str
    sha256: str
    format: str
    copies: list[str] = field(default_factory=list)
    split: str = ""
    run_id: str = ""

    def metadata(self) -> dict[str, str]:
        """What goes into ``x-metadata`` (string values: Edge Impulse's sample metadata is
        ``Dict[str, str]``): enough to trace a sample back to its file, split and run, and to
        reconcile the project with the data set (``ei status``)."""
        meta = {"source": self.path, "sha256": self.sha256, "split": self.split or self.category}
        if self.run_id:
            meta["run_id"] = self.run_id
        return meta


@dataclass
class UploadPlan:
    """What to send: unique contents, and what is left out and why."""

    root: Path
    items: list[UploadItem]
    usable: int
    skipped_files: list[dict]
    copies_other_category: int = 0

    @property
    def copies(self) -> int:
        return sum(len(it.copies) for it in self.items)

    def counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for it in self.items:
            out[(it.category, it.label)] = out.get((it.category, it.label), 0) + 1
        return out




def plan_upload(data: str | Path, split_from: str | Path | None = None,
                category: str = "split") -> UploadPlan:
    """Scan ``data`` and decide, for every usable image, its label and category.

    Args:
        data: data set folder (one sub-folder per class) or ``.zip``.
        split_from: a run folder; its ``split.json`` sends train and val to ``training`` and
            test to ``testing``, so Edge Impulse tests on the images we test on.
        category: without ``split_from``: ``split`` (Edge Impulse splits), ``training`` or
            ``testing``.

    Raises:
        DataError: unknown category, or images missing from (or extra to) the run's split.
    """
    if category not in CATEGORIES:
        raise DataError(f"unknown category {category!r}", f"use one of {', '.join(CATEGORIES)}")
    ds = scan_dataset(data, size=None)
    where: dict[str, str] = {}
    part_of: dict[str, str] = {}
    run_id = Path(split_from).resolve().name if split_from is not None else ""
    if split_from is not None:
        split = load_split(Path(split_from))
        idx = split_indices(ds, split)
        for name, cat in (("train", "training"), ("val", "training"), ("test", "testing")):
            for i in idx[name]:
                where[ds.items[int(i)].path] = cat
                part_of[ds.items[int(i)].path] = name
        extra = [it.path for it in ds.items if it.path not in where]
        if extra:
            raise DataError(f"{len(extra)} usable image(s) in {ds.root} are not in "
                            f"{Path(split_from) / 'split.json'} (first: {extra[0]})",
                            "pass the --data the run was trained on, or drop --split-from")
    by_sha: dict[str, UploadItem] = {}
    other_category = 0
    for it in sorted(ds.items, key=lambda it: it.path):
        sha = sha256_file(ds.root / it.path)
        cat = where.get(it.path, category)
        label = ds.classes[it.label]
        if sha in by_sha:
            first = by_sha[sha]
            first.copies.append(it.path)
            other_category += first.category != cat
            continue
        by_sha[sha] = UploadItem(it.path, label, cat, sha, it.format,
                                 split=part_of.get(it.path, cat), run_id=run_id)
    return UploadPlan(ds.root, list(by_sha.values()), len(ds.items), list(ds.skipped),
                      other_category)


def _payload(root: Path, item: UploadItem) -> tuple[str, bytes, str]:
    """File name, bytes and content type to send: JPEG and PNG as they are, others as PNG."""
    src = root / item.path
    stem = Path(item.path).stem or "image"
    ext = _EXT.get(item.format.upper())
    if ext is not None:
        return stem + ext, src.read_bytes(), "image/jpeg" if ext == ".jpg" else "image/png"
    # Edge Impulse takes .jpg and .png images; re-encode others losslessly, as our pipeline
    # decodes them (EXIF rotation applied, transparency on white).
    from PIL import Image

    from facemask_edge.data.images import decode_image

    buf = io.BytesIO()
    Image.fromarray(decode_image(src).rgb).save(buf, "PNG")
    return stem + ".png", buf.getvalue(), "image/png"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one image.

    Attributes:
        attempts: requests per image at most.
        base_delay: first back-off in seconds; doubles each retry, with jitter.
        max_delay: back-off ceiling.
        max_retry_after: longest ``Retry-After`` we honour (longer values are capped).
    """

    attempts: int = 8
    base_delay: float = 0.25
    max_delay: float = 20.0
    max_retry_after: float = 60.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        d = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return d * rng.uniform(0.5, 1.0)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass
class _Outcome:
    item: UploadItem
    status: str  # uploaded | already-there | failed | interrupted
    sample_id: int | None = None
    error: str = ""
    requests: int = 0


class _Abort(Exception):
    """Stop everything: the key was rejected or the service cannot be reached."""

    def __init__(self, error: EdgeImpulseError):
        super().__init__(str(error))
        self.error = error


@dataclass
class UploadSummary:
    """What an upload did."""

    project_id: int | None
    usable: int
    unique: int
    copies: int
    copies_other_category: int
    skipped_files: list[dict]
    in_ledger: int = 0
    uploaded: int = 0
    already_there: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    requests: int = 0
    ledger_path: str = ""
    ledger_mismatch: int = 0
    stored: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def sent_ok(self) -> int:
        return self.uploaded + self.already_there

    @property
    def images_per_second(self) -> float:
        return self.sent_ok / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """Human-readable summary, first line the totals."""
        out = [f"uploaded {self.uploaded}, skipped {self.already_there + self.in_ledger} already "
               f"there ({self.in_ledger} from the ledger, {self.already_there} confirmed by Edge "
               f"Impulse), failed {len(self.failed)}"
               + (" - interrupted, re-run to resume" if self.interrupted else "")]
        out.append(f"  {self.usable} usable images = {self.unique} distinct files + {self.copies} "
                   f"byte-identical copies (stored once, as Edge Impulse refuses duplicates)")
        if self.copies_other_category:
            out.append(f"  {self.copies_other_category} of those copies are in another split than "
                       f"their first file; each content is stored in the first file's category")
        if self.skipped_files:
            out.append(f"  {len(self.skipped_files)} file(s) not sent because they do not decode:")
            out += [f"    {s['path']}: {s['reason']}" for s in self.skipped_files[:10]]
            if len(self.skipped_files) > 10:
                out.append(f"    ... and {len(self.skipped_files) - 10} more")
        if self.failed:
            out.append("  failed:")
            out += [f"    {p}: {e}" for p, e in self.failed[:10]]
            if len(self.failed) > 10:
                out.append(f"    ... and {len(self.failed) - 10} more")
        if self.ledger_mismatch:
            out.append(f"  {self.ledger_mismatch} image(s) are in the ledger with another label or "
                       f"category; Edge Impulse keeps the first (delete them in Studio to change)")
        if self.sent_ok:
            out.append(f"  {self.sent_ok} images in {self.seconds:.1f} s "
                       f"({self.images_per_second:.1f} images/s, {self.requests} requests)")
        out.append(f"  ledger: {self.ledger_path}")
        return out


def make_session(concurrency: int) -> requests.Session:
    """A keep-alive session with one pooled connection per worker and no hidden retries; it
    refuses redirects to another origin (the key would go with them)."""
    s = ei_session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(4, concurrency), max_retries=0)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


def _is_connect_failure(exc: requests.RequestException) -> bool:
    """Refused or timed out before the request was sent (nothing can have been stored)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        import urllib3.exceptions as u3

        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)
        return isinstance(reason, (u3.NewConnectionError, u3.ConnectTimeoutError))
    return False


#: The same refusal this many times in a row (all workers together) stops the run: it is about
#: the project or the key (a full quota, a read-only project), not about one image.
SAME_REFUSAL_LIMIT = 3


class _Uploader:
    def __init__(self, cfg: EIConfig, session: requests.Session, root: Path, policy: RetryPolicy,
                 seed: int | None):
        self.cfg, self.session, self.root, self.policy = cfg, session, root, policy
        self.stop = threading.Event()
        self.reached = threading.Event()  # the ingestion service has answered at least once
        # Connect failures in a row, all workers together: past the limit the service is gone.
        self.connect_failures = 0
        self.connect_failure_limit = 10
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._refusal = ("", 0)  # (last permanent error, how many in a row)

    def _refused(self, error: str) -> str:
        """Count a permanent refusal; stop the run when the same one comes back too often."""
        with self._rng_lock:
            last, n = self._refusal
            n = n + 1 if error == last else 1
            self._refusal = (error, n)
        if n >= SAME_REFUSAL_LIMIT:
            raise _Abort(EdgeImpulseError(
                f"Edge Impulse refused {n} images in a row with the same error: {error}",
                "fix the project or the key in Studio (see the error), then re-run to resume"))
        return error

    def _accepted(self) -> None:
        with self._rng_lock:
            self._refusal = ("", 0)

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def _jitter(self, attempt: int) -> float:
        with self._rng_lock:
            return self.policy.backoff(attempt, self._rng)

    def send(self, item: UploadItem) -> _Outcome:
        try:
            return self._send(item)
        except _Abort:
            self.stop.set()  # stop the other workers now, not when the main thread sees it
            raise

    def _send(self, item: UploadItem) -> _Outcome:
        name, payload, ctype = _payload(self.root, item)
        url = self.cfg.ingestion_url(f"/api/{item.category}/files")
        headers = {"x-api-key": self.cfg.api_key, "x-label": quote(item.label, safe="-_.!~*'()"),
                   "x-disallow-duplicates": "1", "Accept": "application/json",
                   # ASCII JSON (non-ASCII path characters escaped): a header must be latin-1
                   "x-metadata": json.dumps(item.metadata(), ensure_ascii=True,
                                            separators=(",", ":"))}
        ambiguous = False  # an earlier attempt may have stored the image
        last = ""
        out = _Outcome(item, "failed")
        for attempt in range(1, self.policy.attempts + 1):
            if self.stop.is_set():
                out.status = "interrupted"
                return out
            delay = None
            out.requests += 1
            try:
                resp = self.session.post(url, headers=headers,
                                         files=[("data", (name, payload, ctype))],
                                         timeout=(self.cfg.timeout, self.cfg.timeout))
            except RedirectRefused as exc:
                raise _Abort(exc.error) from None
            except requests.RequestException as exc:
                if _is_connect_failure(exc):
                    with self._rng_lock:
                        self.connect_failures += 1
                        gone = self.connect_failures >= self.connect_failure_limit
                    if gone or not self.reached.is_set():
                        err = unreachable("ingestion service", self.cfg.ingestion_endpoint, exc,
                                          self.cfg.timeout)
                        err.__cause__ = sanitized(exc)
                        raise _Abort(err) from None
                else:
                    ambiguous = True
                last = redact_clip(f"{type(exc).__name__}: {exc}")
            else:
                self.reached.set()
                self.connect_failures = 0
                status = resp.status_code
                if status in (401, 403, 421):
                    # 421: the ingestion service's answer to a request without the key header
                    text = _body_error(resp)
                    raise _Abort(EdgeImpulseError(f"Edge Impulse ingestion rejected the API key "
                                                  f"({status}: {text})", KEY_HINT))
                if status == 200:
                    result = _file_result(resp)
                    refusal = _request_refusal(resp) if result is None else None
                    if refusal is not None:
                        # {"success": false, "error": ...} for the whole request: the service
                        # looked at it and said no; sending it again gets the same answer.
                        out.error = self._refused(refusal)
                        return out
                    if result is None:
                        last = "200 without a per-file result"
                    elif result.get("success"):
                        self._accepted()
                        out.status, out.sample_id = "uploaded", _int(result.get("sampleId"))
                        return out
                    else:
                        err = redact_clip(str(result.get("error") or "rejected"), 300)
                        if _DUPLICATE in err:
                            self._accepted()
                            out.status = "uploaded" if ambiguous else "already-there"
                            out.sample_id = _first_id(err)
                            return out
                        out.error = self._refused(err)
                        return out  # the service refused this file: retrying will not help
                elif status in _RETRY_STATUS:
                    last = f"HTTP {status}: {_body_error(resp)}"
                    if status == 429:
                        after = _retry_after(resp.headers.get("Retry-After"))
                        if after is not None:
                            delay = min(after, self.policy.max_retry_after)
                    ambiguous = ambiguous or status in (500, 502, 504)
                else:
                    out.error = self._refused(f"HTTP {status}: {_body_error(resp)}")
                    return out
            if attempt < self.policy.attempts:
                backoff = self._jitter(attempt)
                self._sleep(max(backoff, delay) if delay is not None else backoff)
        out.error = f"gave up after {self.policy.attempts} attempts (last: {last})"
        return out


def _body_error(resp: requests.Response) -> str:
    try:
        body = resp.json()
        text = body.get("error") if isinstance(body, dict) else None
    except ValueError:
        text = None
    text = text or resp.text or resp.reason or ""
    return redact_clip(str(text))


def _request_refusal(resp: requests.Response) -> str | None:
    """The server's error of a ``{"success": false, "error": ...}`` answer (masked), else None."""
    try:
        body = resp.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("success") is not False:
        return None
    return redact_clip(str(body.get("error") or "refused without a message"), 300)


def _file_result(resp: requests.Response) -> dict | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, list) or len(files) != 1 or not isinstance(files[0], dict):
        return None
    return files[0]


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _first_id(error: str) -> int | None:
    m = re.search(r"ids?:\s*\[?\s*(\d+)", error)
    return int(m.group(1)) if m else None


def upload_dataset(cfg: EIConfig, plan: UploadPlan, ledger: Ledger, project_id: int | None,
                   concurrency: int = 8, policy: RetryPolicy | None = None,
                   session: requests.Session | None = None, seed: int | None = None,
                   show_progress: bool = True, recheck: bool = False) -> UploadSummary:
    """Send every planned image that the ledger does not have yet.

    Args:
        cfg: endpoints, key and timeout.
        plan: from :func:`plan_upload`.
        ledger: an open :class:`Ledger` for this project.
        project_id: recorded with each ledger entry.
        concurrency: parallel requests.
        policy: retry policy (default :class:`RetryPolicy`).
        session: a ``requests.Session`` to use (default: a pooled one).
        seed: seed for the back-off jitter.
        show_progress: show a progress bar on stderr.
        recheck: send images the ledger already has as well (the service refuses those it
            still holds, so this only re-sends what was deleted on the Edge Impulse side).

    Returns:
        The summary; ``interrupted`` is set if Ctrl-C stopped it (finished images are in the
        ledger, the rest are sent by the next run).

    Raises:
        EdgeImpulseError: the key was refused, or the ingestion service could not be reached
            before anything was sent.
    """
    if concurrency < 1:
        raise EdgeImpulseError(f"concurrency must be at least 1, got {concurrency}")
    policy = policy or RetryPolicy()
    own_session = session is None
    session = session or make_session(concurrency)
    summary = UploadSummary(project_id, plan.usable, len(plan.items), plan.copies,
                            plan.copies_other_category, plan.skipped_files,
                            ledger_path=str(ledger.path))
    todo = []
    for it in plan.items:
        done = ledger.get(it.sha256)
        if done is None or recheck:
            todo.append(it)
            continue
        summary.in_ledger += 1
        if done.get("label") != it.label or done.get("category") != it.category:
            summary.ledger_mismatch += 1
    up = _Uploader(cfg, session, plan.root, policy, seed)
    start = time.monotonic()
    abort: _Abort | None = None
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ei-upload")
    ctrl_c = threading.Event()

    def stop_and_record(pending) -> None:
        summary.interrupted = True
        up.stop.set()
        from facemask_edge.progress import log

        log(f"interrupted: waiting for the requests in flight (at most "
            f"{cfg.timeout:g} s) to record them; Ctrl-C again to abandon them")
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        for fut in pending:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                _account(summary, fut.result(), ledger, project_id)

    try:
        with progress(f"uploading {len(todo)} images to Edge Impulse", total=len(todo)) \
                if show_progress and todo else _null_progress() as bar, _ctrl_c_sets(ctrl_c):
            pending = {pool.submit(up.send, it) for it in todo}
            try:
                while pending and not ctrl_c.is_set():
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for fut in done:
                        try:
                            out = fut.result()
                        except _Abort as exc:
                            abort = abort or exc
                            up.stop.set()
                            continue
                        _account(summary, out, ledger, project_id)
                        bar.advance()
                    if abort is not None:
                        break
                if ctrl_c.is_set():
                    stop_and_record(pending)
            except KeyboardInterrupt:  # not in the main thread: Ctrl-C arrives as usual
                stop_and_record(pending)
    finally:
        up.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        summary.seconds = time.monotonic() - start
        if own_session:
            session.close()
    if abort is not None:
        raise abort.error from abort.error.__cause__
    return summary


@contextmanager
def _ctrl_c_sets(event: threading.Event):
    """While the upload runs, Ctrl-C sets ``event`` instead of raising ``KeyboardInterrupt``.

    A ``KeyboardInterrupt`` raised inside ``concurrent.futures.wait`` can leave a future's
    lock held: the workers then block in ``set_result`` and ``shutdown(wait=True)`` never
    returns (seen: an upload hung for 12 minutes after one Ctrl-C). A second Ctrl-C abandons
    the requests in flight and exits at once: the ledger is ``fsync``'d entry by entry, so
    nothing recorded is lost. Outside the main thread (no signal handlers there) nothing
    changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if event.is_set():
            os.write(2, b"\nabandoned the requests in flight; re-run to resume\n")
            os._exit(130)
        event.set()

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _account(summary: UploadSummary, out: _Outcome, ledger: Ledger, project_id: int | None) -> None:
    summary.requests += out.requests
    it = out.item
    if out.status in ("uploaded", "already-there"):
        sample_id = out.sample_id
        if sample_id is None:  # a refusal without ids: keep what an earlier run learnt
            sample_id = (ledger.get(it.sha256) or {}).get("sample_id")
        ledger.record(it.sha256, sample_id=sample_id, label=it.label, category=it.category,
                      file=it.path, copies=it.copies, project=project_id, status=out.status)
        if out.status == "uploaded":
            summary.uploaded += 1
        else:
            summary.already_there += 1
        key = (it.category, it.label)
        summary.stored[key] = summary.stored.get(key, 0) + 1
    elif out.status == "failed":
        summary.failed.append((it.path, out.error))
    else:
        summary.interrupted = True


class _null_progress:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def advance(self, n: int = 1) -> None:
        pass
