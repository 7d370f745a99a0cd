"""Stream a validation set to one or more boards, compare each answer with the host, keep it.

Every finished image is appended to ``results.jsonl`` at once (one JSON object a line, fsynced),
so a run that is killed resumes where it stopped: images already in the file are not sent again.
A damaged line costs only that line: it is skipped and reported, the records after it are kept.
Several boards take images from one shared queue (a board farm); an image a failing board could
not finish goes back to the queue for the others. Each board's session gives up on its own
(``SessionLimits``), so a board that answers but never finishes an image cannot hold the run.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import deque
from pathlib import Path

from facemask_edge.device.session import BoardSession, ImageSource, SessionLimits
from facemask_edge.errors import DataError, DeviceError, DeviceTimeout, FacemaskError
from facemask_edge.progress import log, progress
from facemask_edge.validate.reference import HostReference
from facemask_edge.validate.report import build_report, write_report
from facemask_edge.validate.testset import ValidationSet

__all__ = ["validate", "validate_run", "WorkQueue", "read_results", "default_out_dir"]

RESULTS = "results.jsonl"


class WorkQueue(ImageSource):
    """Images shared by several board sessions; thread-safe."""

    def __init__(self, items, workers: int):
        self._items = deque(items)
        self._cond = threading.Condition()
        self._busy = workers

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def take(self):
        with self._cond:
            return self._items.popleft() if self._items else None

    def give_back(self, key, data) -> None:
        with self._cond:
            self._items.appendleft((key, data))
            self._cond.notify_all()

    def wait_for_more(self) -> bool:
        """A worker ran out of images: wait while another may still give some back."""
        with self._cond:
            self._busy -= 1
            while not self._items and self._busy > 0:
                self._cond.wait(0.1)
            if self._items:
                self._busy += 1
                return True
            self._cond.notify_all()
            return False

    def worker_gone(self) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()


def default_out_dir(run_dir: Path, data: str | Path | None) -> Path:
    """``RUN_DIR/validate`` for the test split, ``RUN_DIR/validate-<folder>`` for ``--data``."""
    if data is None:
        return Path(run_dir) / "validate"
    return Path(run_dir) / f"validate-{Path(data).resolve().name}"


def read_results(path: Path, bad_lines: list[int] | None = None
                 ) -> tuple[dict | None, dict[int, dict], list[dict]]:
    """Read ``results.jsonl``: header, records by image index, segments (one per invocation).

    A line that is not a record (damaged on disk, edited by hand) is skipped and the lines after
    it are kept; its 1-based number is appended to ``bad_lines`` when given. A last line cut
    short by a kill (no line end, not JSON) is trimmed from the file, since the next append
    would otherwise glue a record to it.
    """
    header, records, segments = None, {}, []
    if not path.exists():
        return header, records, segments
    raw = path.read_bytes()
    lines = raw.splitlines(keepends=True)
    for n, line in enumerate(lines, 1):
        torn = not line.endswith(b"\n")
        try:
            obj = json.loads(line)
            kind = obj.get("kind")
            if kind == "image":
                if not _is_image_record(obj):
                    raise ValueError("not an image record")
                records[obj["i"]] = obj
            elif kind == "header":
                header = obj
            elif kind == "segment":
                segments.append(obj)
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except (ValueError, KeyError, TypeError, AttributeError):
            if torn:  # the kill artefact: nothing follows it
                with open(path, "r+b") as f:
                    f.truncate(len(raw) - len(line))
                    os.fsync(f.fileno())
            elif bad_lines is not None:
                bad_lines.append(n)
    return header, records, segments


def _is_image_record(obj: dict) -> bool:
    """Has what the report reads (a hand-edited or damaged record must not crash it later)."""
    try:
        return (isinstance(obj["i"], int) and obj["i"] >= 0 and isinstance(obj["key"], str)
                and isinstance(obj["label"], int)
                and all(isinstance(obj[side]["label"], int) and isinstance(obj[side]["scores"], list)
                        for side in ("board", "host"))
                and isinstance(obj["board"]["us"], (int, float)))
    except (KeyError, TypeError):
        return False


class _Appender:
    """Append-only writer: one record a line, flushed and fsynced before ``write`` returns, so
    a record the run counted as done is on disk."""

    def __init__(self, path: Path):
        self.f = open(path, "a+b")
        self.lock = threading.Lock()
        # A last line without its line end (a kill between the record and its newline) would
        # swallow the next record: end it first.
        if self.f.tell() > 0:
            self.f.seek(-1, os.SEEK_END)
            if self.f.read(1) != b"\n":
                self.f.write(b"\n")

    def write(self, obj: dict) -> None:
        line = (json.dumps(obj, separators=(",", ":")) + "\n").encode("utf-8")
        with self.lock:
            self.f.write(line)
            self.f.flush()
            os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def validate(sessions: list[BoardSession], vset: ValidationSet, model: bytes, card: dict,
             out_dir: str | Path, reference: str = "tflm", fresh: bool = False,
             stop: threading.Event | None = None) -> dict:
    """Validate a model on boards, image by image, against the host int8 reference.

    Args:
        sessions: one :class:`BoardSession` per board (ports already open, not yet handshaken).
        vset: the images and their labels.
        model: the run's ``model_int8.tflite`` bytes (its hash is checked on every board).
        card: the run's model card.
        out_dir: where ``results.jsonl`` and the report go.
        reference: ``"tflm"`` or ``"tflite"`` (BUILTIN_REF kernels).
        fresh: forget earlier results in ``out_dir`` instead of resuming.
        stop: set it to end early (the images in flight still finish and are kept).

    Returns:
        The report (also written as ``report.json``, ``report.md``, ``confusion.png``).

    Raises:
        DeviceError: every board failed before the set was done (results so far are kept).
        DataError: ``out_dir`` holds results of another model or data set (use ``fresh``).
    """
    import hashlib

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS
    sha = hashlib.sha256(model).hexdigest()
    if fresh and path.exists():
        path.unlink()
    bad_lines: list[int] = []
    header, records, segments = read_results(path, bad_lines)
    if bad_lines:
        shown = ", ".join(map(str, bad_lines[:5])) + (", ..." if len(bad_lines) > 5 else "")
        log(f"warning: {path}: skipped {len(bad_lines)} unreadable line(s) ({shown}); "
            f"the other {len(records)} image record(s) are kept and those images are sent again")
    want = {"model_sha256": sha, "source": vset.source, "n": len(vset), "classes": vset.classes}
    if header is not None and any(header.get(k) != v for k, v in want.items()):
        raise DataError(f"{path} holds results of another model or image set",
                        "pass --fresh to start over, or --out DIR to keep both")
    # The keys must still name the same images.
    for i, rec in records.items():
        if i >= len(vset) or rec.get("key") != vset.keys[i]:
            raise DataError(f"{path} does not match the images being validated (image {i})",
                            "pass --fresh to start over")
    appender = _Appender(path)
    if header is None:
        appender.write({"kind": "header", **want, "data_root": vset.data_root,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    todo = [i for i in range(len(vset)) if i not in records]
    if records:
        log(f"resuming: {len(records)} of {len(vset)} images already done, {len(todo)} to go")

    segment = None
    failures: list[BaseException] = []
    try:
        if todo:
            segment, failures = _stream(sessions, vset, todo, model, card, sha, reference, records,
                                        appender, stop)
            appender.write(segment)
            segments.append(segment)
    except BaseException as exc:
        # Ctrl-C or an error outside the boards' threads: the report says so and how far it got.
        write_report(out_dir, build_report(vset, records, segments, card, sha, reference,
                                           failure=_failure(exc, records, vset, segment)))
        raise
    finally:
        appender.close()
    error = None
    if failures and len(records) < len(vset):
        first = failures[0]
        hint = f"results so far are in {path}; run the same command again to resume"
        if isinstance(first, FacemaskError) and not isinstance(first, DeviceTimeout) and not segment["images"]:
            error = first  # no board got going (wrong model, no port...): its own message says why
        else:
            why = first.message if isinstance(first, FacemaskError) else f"{type(first).__name__}: {first}"
            if isinstance(first, FacemaskError) and first.hint:
                hint = f"{first.hint}; {hint}"
            cls = type(first) if isinstance(first, DeviceError) else DeviceError
            error = cls(f"validated {len(records)} of {len(vset)} images ({segment['images']} in this run), "
                        f"then gave up: {why}", hint)
    report = build_report(vset, records, segments, card, sha, reference,
                          failure=_failure(error, records, vset, segment) if error else None)
    write_report(out_dir, report)
    if error is not None:
        raise error
    return report


def _failure(exc: BaseException, records: dict, vset, segment: dict | None) -> dict:
    """What the report says about a validation that did not finish: why, and how far it got."""
    if isinstance(exc, KeyboardInterrupt):
        status, why = "interrupted", "interrupted (Ctrl-C)"
    else:
        status, why = "failed", (str(exc) if isinstance(exc, FacemaskError) else f"{type(exc).__name__}: {exc}")
    streamed = bool(segment and segment.get("images"))
    return {"status": status, "error": why, "validated": len(records), "images": len(vset),
            "stage": "streaming images" if streamed or records else "connecting to the board(s)",
            "boards": dict(segment.get("errors", {})) if segment else {}}


def _stream(sessions, vset, todo, model, card, sha, reference, records, appender, stop) -> dict:
    ref = HostReference(model, reference)
    shape = (ref.shape[1], ref.shape[2], ref.shape[3])
    classes = len(vset.classes)
    work = WorkQueue(((i, vset.input_bytes(i)) for i in todo), workers=len(sessions))
    results: queue.Queue = queue.Queue()
    errors: dict[str, str] = {}
    failures: list[BaseException] = []
    infos: dict[str, dict] = {}
    stop = stop or threading.Event()
    started = {"t": None}

    def worker(session: BoardSession) -> None:
        try:
            info = session.handshake(expect_sha256=sha, expect_shape=shape, expect_classes=classes)
            infos[session.name] = {"board": info.board, "firmware": info.firmware, "baud": info.baud,
                                   "arena_bytes": info.arena_bytes, "free_ram_bytes": info.free_ram_bytes,
                                   "max_body": info.max_body, "rx_window": info.rx_window}
            if started["t"] is None:
                started["t"] = time.monotonic()
            while True:
                session.stream(work, results.put, stop=stop)
                if stop.is_set() or not work.wait_for_more():
                    break
        except FacemaskError as exc:
            errors[session.name] = str(exc)
            failures.append(exc)
            work.worker_gone()
        except Exception as exc:  # never lose the other boards' work to one board's bug
            errors[session.name] = f"{type(exc).__name__}: {exc}"
            failures.append(exc)
            work.worker_gone()
        finally:
            session.close()

    threads = [threading.Thread(target=worker, args=(s,), name=f"board-{s.name}", daemon=True)
               for s in sessions]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    last = None
    done_now = 0
    try:
        with progress(f"validating {len(todo)} images on {len(sessions)} board(s)", total=len(todo)) as bar:
            while True:
                try:
                    r = results.get(timeout=0.1)
                except queue.Empty:
                    if not any(t.is_alive() for t in threads) and results.empty():
                        break
                    continue
                i = int(r.key)
                if i in records:  # never twice, whatever a board sends
                    continue
                host = ref.scores(vset.input_bytes(i))
                host_label = max(range(len(host)), key=lambda k: (host[k], -k))
                rec = {"kind": "image", "i": i, "key": vset.keys[i], "label": int(vset.labels[i]),
                       "board": {"label": r.label, "scores": list(r.scores), "us": r.micros},
                       "host": {"label": host_label, "scores": host}, "port": r.port}
                if r.count is not None:
                    rec["board"].update(count=r.count, counter=r.counter, name=r.board)
                appender.write(rec)
                records[i] = rec
                done_now += 1
                last = time.monotonic()
                bar.advance()
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join(timeout=3)
        raise
    for t in threads:
        t.join(timeout=5)
    begin = started["t"] or t0
    wall = (last - begin) if last else 0.0
    ports = {}
    for s in sessions:
        ports[s.name] = {**infos.get(s.name, {}), **s.stats.as_dict()}
    return {"kind": "segment", "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - (time.monotonic() - t0))),
            "images": done_now, "wall_s": wall, "setup_s": begin - t0, "ports": ports, "errors": errors,
            "reference": reference}, failures


def validate_run(run_dir: str | Path, ports: list[str] | None = None, data: str | Path | None = None,
                 out_dir: str | Path | None = None, baud: int = 921600, timeout: float = 8.0,
                 limit: int | None = None, fresh: bool = False, reference: str = "tflm",
                 chunk: int = 4090, window: int | None = None, log_fn=None,
                 limits: SessionLimits | None = None) -> tuple[dict, Path]:
    """Validate a converted run on the boards at ``ports`` (URLs; default: the one USB board).

    Opens the ports, loads the images (the run's test split, or ``data``), streams, reports.
    ``timeout`` and ``limits`` bound every wait on a board (:class:`SessionLimits`).

    Returns:
        ``(report, out_dir)``.

    Raises:
        DeviceError: a port cannot be opened, or the boards failed (results so far are kept).
    """
    from facemask_edge.device.session import BoardSession
    from facemask_edge.artifacts.run import Run
    from facemask_edge.device.transport import choose_port, open_port
    from facemask_edge.validate.testset import load_validation_set

    run = Run(run_dir)
    run_dir = run.path
    shipped = run.shipped()
    model, card = shipped.data, shipped.card
    urls = list(ports or []) or [choose_port()]
    if len(set(urls)) != len(urls):
        raise DeviceError("the same port is given twice", "give each board's port once")
    opened = []
    try:
        for url in urls:
            opened.append((url, open_port(url, baud=baud, timeout=0.02)))
        vset = load_validation_set(run, data, limit=limit)
        sessions = [BoardSession(p, name=url, timeout=timeout, chunk_size=chunk, window=window, log=log_fn,
                                 limits=limits)
                    for url, p in opened]
        out = Path(out_dir) if out_dir else default_out_dir(run_dir, data)
        report = validate(sessions, vset, model, card, out, reference=reference, fresh=fresh)
    finally:
        for _, p in opened:
            try:
                p.close()
            except Exception:
                pass
    return report, out
