"""Find the class folders of a data set, decode every file once, and keep a manifest.

Layout: one folder per class (the Kaggle face-mask layout), at the given path or nested a few
levels below it (``data/with_mask``, an archive's ``repo-main/dataset/with_mask``). A ``.zip`` is
extracted to the user cache first (``data.archive``: size, ratio and member limits). Files that
do not decode are skipped with their reason; exact duplicates (same pixels) are grouped so that
splits never separate them.

Several data roots (``--data A --data B``) merge their class folders by name: a two-class set can
lend faces to a three-class one. Each item then keeps the root it came from (``Item.root``, in
``manifest.json``), and its ``path`` is relative to the roots' common folder so that the same
file name in two roots stays two items. Files of a non-commercial source
(:data:`facemask_edge.data.sources.SOURCES`) can be left out here, before anything is decoded.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facemask_edge.data.images import decode_image, pixel_hash
from facemask_edge.data.preprocess import COLORS, device_preprocess
from facemask_edge.errors import DataError
from facemask_edge.paths import cache_dir
from facemask_edge.progress import progress

__all__ = ["Item", "Dataset", "scan_dataset", "check_data_path", "find_class_root", "data_paths"]

PREPROCESS_VERSION = 1
_IGNORED_NAMES = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass
class Item:
    """One usable image: its file (relative to the data root), class and pixel identity."""

    path: str
    label: int
    sha: str
    width: int
    height: int
    format: str
    root: str = ""  # the data root (class folders' parent) this file came from


@dataclass
class Dataset:
    """A scanned data set: usable items, skipped files, and the decoded model-size pixels."""

    root: Path
    classes: list[str]
    items: list[Item]
    skipped: list[dict]
    images: np.ndarray | None = None  # uint8 (N, size, size, C), aligned with items
    size: int | None = None
    color: str | None = None
    conflicts: list[list[str]] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)  # every data root; [root] for one
    excluded: list[dict] = field(default_factory=list)  # left out on purpose (licence), not skipped

    @property
    def labels(self) -> np.ndarray:
        return np.array([it.label for it in self.items], dtype=np.int64)

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}

    def duplicate_groups(self) -> int:
        return len({it.sha for it in self.items})

    def summary_line(self) -> str:
        per = ", ".join(f"{c} {n}" for c, n in self.counts().items())
        dup = len(self.items) - self.duplicate_groups()
        where = ", ".join(str(r) for r in self.roots) if len(self.roots) > 1 else str(self.root)
        line = f"{len(self.items)} images ({per}) from {where}"
        if dup:
            line += f"; {dup} exact duplicates kept together"
        if self.skipped:
            line += f"; skipped {len(self.skipped)} file(s) that could not be used (see skipped.txt)"
        if self.excluded:
            line += f"; excluded {len(self.excluded)} non-commercial file(s) (see manifest.json)"
        return line

    def write_manifest(self, run_dir: Path) -> None:
        """Write ``manifest.json`` (every file: used or skipped, with reason) and ``skipped.txt``."""
        run_dir.mkdir(parents=True, exist_ok=True)
        manifest = {
            "root": str(self.root),
            "roots": [str(r) for r in (self.roots or [self.root])],
            "classes": self.classes,
            "counts": self.counts(),
            "used": [asdict(it) for it in self.items],
            "skipped": self.skipped,
            "conflicting_duplicates": self.conflicts,
            "excluded": self.excluded,
        }
        (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
        lines = [f"{s['path']}\t{s['reason']}" for s in self.skipped]
        (run_dir / "skipped.txt").write_text("".join(line + "\n" for line in lines))


def _is_hidden(p: Path | str) -> bool:
    name = p if isinstance(p, str) else p.name
    return name.startswith(".") or name in _IGNORED_NAMES


def _class_dirs(d: Path) -> list[Path]:
    return sorted(c for c in d.iterdir() if c.is_dir() and not _is_hidden(c))


def _has_files(d: Path) -> bool:
    return any(f.is_file() and not _is_hidden(f) for f in d.rglob("*"))


def find_class_root(path: Path, max_depth: int = 3) -> Path:
    """Return the folder whose sub-folders are the classes, searching a few levels down."""
    frontier = [path]
    for _ in range(max_depth + 1):
        nxt = []
        for d in frontier:
            subs = _class_dirs(d)
            direct_files = [f for f in d.iterdir() if f.is_file() and not _is_hidden(f)]
            with_files = [s for s in subs if any(f.is_file() for f in s.iterdir())]
            if len(with_files) >= 2 or (len(subs) >= 2 and not direct_files and
                                        any(_has_files(s) for s in subs) and
                                        all(not _class_dirs(s) for s in subs)):
                return d
            nxt.extend(subs)
        frontier = nxt
    return path


def _extract_zip(zpath: Path) -> Path:
    from facemask_edge.data.archive import extract_zip

    st = zpath.stat()
    key = hashlib.sha256(f"{zpath.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = cache_dir() / "extracted" / key
    if not (dest / ".complete").exists():
        extract_zip(zpath, dest, marker=".complete")  # all or nothing, within the limits
    return dest


def _not_a_file(p: Path) -> str:
    """Why a folder entry is not a file to decode (symbolic links that lead nowhere, or to a
    folder: ``rglob`` does not descend into linked folders)."""
    if p.is_symlink():
        try:
            p.resolve(strict=True)
        except RuntimeError:  # Python 3.11 raises this for a loop
            return "symbolic link loop"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "symbolic link loop"
            return f"broken symbolic link (to {os.readlink(p)})"
        if p.is_dir():
            return "symbolic link to a folder: not followed (link the files, or copy the folder in)"
    return "not a regular file"


def _fingerprint(files: list[tuple[str, int]], root: Path, size, color) -> str:
    h = hashlib.sha256(f"v{PREPROCESS_VERSION}|{size}|{color}".encode())
    for rel, label in files:
        st = (root / rel).stat()
        h.update(f"{rel}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _decode_one(args):
    path, size, color = args
    try:
        dec = decode_image(path)
    except ValueError as exc:
        return None, str(exc)
    except Exception as exc:  # any decoder failure is a skipped file, never a crash
        return None, f"{type(exc).__name__}: {exc}"
    small = device_preprocess(dec.rgb, size, color) if size else None
    return (pixel_hash(dec.rgb), dec.width, dec.height, dec.format, small), None


def data_paths(data) -> list[str]:
    """A ``--data`` value as a list of roots: one path, a list of them (``--data A --data B``,
    a TOML list), or a comma-free string."""
    if isinstance(data, (list, tuple)):
        return [str(d) for d in data]
    return [str(data)]


def check_data_path(data: str | Path | list | tuple) -> Path:
    """The data path (the first of several), or a DataError if one does not exist (commands
    call it before other work)."""
    paths = data_paths(data)
    if not paths:
        raise DataError("no data set given", "pass --data DIR (repeat it to merge several)")
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise DataError(f"data path {path} does not exist",
                            "pass --data DIR with one sub-folder per class, or a .zip of one")
    return Path(paths[0]).expanduser()


def scan_dataset(data, size: int | None = 96, color: str = "rgb",
                 use_cache: bool = True, workers: int | None = None,
                 exclude_noncommercial: bool = False) -> Dataset:
    """Scan one or several data set folders (or ``.zip`` files), decoding every file once.

    Args:
        data: folder with one sub-folder per class, possibly nested, or a ``.zip`` of one; or a
            list of them, whose class folders are merged by name (class order: sorted names).
        size: decode to the model input size with device preprocessing (``None``: metadata only).
        color: ``"rgb"`` or ``"grayscale"``.
        use_cache: reuse decoded pixels from the user cache when the files have not changed.
        workers: decoding threads (default: CPU count).
        exclude_noncommercial: leave out files of non-commercial sources (``mfn_*``) before
            decoding; they are listed in ``Dataset.excluded``.

    Raises:
        DataError: a path does not exist, there are fewer than two classes, or a class has no
            usable image.
    """
    if color not in COLORS:
        raise DataError(f"unknown colour {color!r}", f"use one of {', '.join(COLORS)}")
    paths = data_paths(data)
    if not paths:
        raise DataError("no data set given", "pass --data DIR (repeat it to merge several)")
    if len(paths) == 1:
        return _scan_one(paths[0], size, color, use_cache, workers, exclude_noncommercial, single=True)
    parts = [_scan_one(p, size, color, use_cache, workers, exclude_noncommercial, single=False)
             for p in paths]
    roots = [d.root for d in parts]
    if len({r.resolve() for r in roots}) < len(roots):
        raise DataError(f"the same data root is given twice ({', '.join(paths)})",
                        "pass each --data once")
    common = Path(os.path.commonpath([str(r.resolve()) for r in roots]))
    classes = sorted({c for d in parts for c in d.classes})
    items, skipped, excluded, images = [], [], [], []
    for d in parts:
        prefix = d.root.resolve().relative_to(common)
        remap = [classes.index(c) for c in d.classes]
        for it in d.items:
            items.append(Item((prefix / it.path).as_posix(), remap[it.label], it.sha, it.width,
                              it.height, it.format, str(d.root)))
        for lst, out in ((d.skipped, skipped), (d.excluded, excluded)):
            out.extend({**e, "path": (prefix / e["path"]).as_posix(), "root": str(d.root)} for e in lst)
        if d.images is not None:
            images.append(d.images)
    merged = np.concatenate(images) if size and images else None
    return _finish(Dataset(root=common, classes=classes, items=items, skipped=skipped,
                           images=merged, size=size, color=color, roots=roots, excluded=excluded))


def _scan_one(data, size, color, use_cache, workers, exclude_noncommercial, single) -> Dataset:
    from facemask_edge.data.sources import is_noncommercial

    path = check_data_path(data)
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise DataError(f"{path} is a file but not a zip archive",
                            "pass a folder with one sub-folder per class, or a .zip of one")
        path = _extract_zip(path)
    root = find_class_root(path)
    class_dirs = _class_dirs(root)
    if len(class_dirs) < (2 if single else 1):
        found = ", ".join(c.name for c in class_dirs) or "none"
        raise DataError(f"found {len(class_dirs)} class folder(s) in {root} ({found}); need at least 2",
                        "lay out one sub-folder per class, e.g. with_mask/ and without_mask/")
    classes = [c.name for c in class_dirs]
    files: list[tuple[str, int]] = []
    unreadable: list[dict] = []  # entries that are no file to decode: listed, never silent
    for label, cdir in enumerate(class_dirs):
        for f in sorted(cdir.rglob("*")):
            rel = f.relative_to(root)
            if any(_is_hidden(p) for p in rel.parts):
                continue
            if f.is_file():
                files.append((rel.as_posix(), label))
            elif not f.is_dir() or f.is_symlink():
                unreadable.append({"path": rel.as_posix(), "label": label, "reason": _not_a_file(f)})
    excluded = []
    if exclude_noncommercial:
        excluded = [{"path": rel, "reason": "non-commercial licence, excluded (--exclude-noncommercial)"}
                    for rel, _ in files if is_noncommercial(rel)]
        files = [(rel, label) for rel, label in files if not is_noncommercial(rel)]
    present = {label for _, label in files}
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        raise DataError(f"class folder(s) {', '.join(empty)} in {root} contain no files"
                        + (" once non-commercial files are excluded" if excluded else ""),
                        "add images or remove the empty folder")

    fp = _fingerprint(files, root, size, color)
    cache_file = cache_dir() / "decoded" / f"{fp}.npz"
    results = None
    if use_cache and cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                images = z["images"] if size else None
            results = meta
        except Exception:
            results = None
    if results is None:
        todo = [(root / rel, size, color) for rel, _ in files]
        out = []
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool, \
                progress(f"decoding {len(todo)} images", total=len(todo)) as bar:
            for res in pool.map(_decode_one, todo, chunksize=8):
                out.append(res)
                bar.advance()
        meta = []
        arrays = []
        for (rel, label), (ok, reason) in zip(files, out):
            if ok is None:
                meta.append({"path": rel, "label": label, "reason": reason})
            else:
                sha, w, h, fmt, small = ok
                meta.append({"path": rel, "label": label, "sha": sha, "width": w, "height": h,
                             "format": fmt})
                if small is not None:
                    arrays.append(small)
        channels = 1 if color == "grayscale" else 3
        images = (np.stack(arrays) if arrays else np.zeros((0, size, size, channels), np.uint8)) \
            if size else None
        if use_cache:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp.npz")
            np.savez(tmp, meta=json.dumps(meta),
                     images=images if images is not None else np.zeros(0, np.uint8))
            tmp.replace(cache_file)
        results = meta

    items = []
    for m in results:
        if "sha" in m:
            items.append(Item(m["path"], m["label"], m["sha"], m["width"], m["height"], m["format"],
                              str(root)))
    skipped = [{"path": m["path"], "reason": m["reason"]} for m in results + unreadable
               if "sha" not in m]
    ds = Dataset(root=root, classes=classes, items=items, skipped=skipped, images=images,
                 size=size, color=color, roots=[root], excluded=excluded)
    return _finish(ds) if single else ds


def _finish(ds: Dataset) -> Dataset:
    """Drop the same pixels filed under two classes (listed) and check every class has images."""
    items, skipped, images = ds.items, ds.skipped, ds.images

    # The same pixels filed under two classes cannot be learned from: drop them all, listed.
    by_sha: dict[str, set[int]] = {}
    for it in items:
        by_sha.setdefault(it.sha, set()).add(it.label)
    bad = {s for s, labels in by_sha.items() if len(labels) > 1}
    conflicts = []
    if bad:
        conflicts = [[it.path for it in items if it.sha == s] for s in sorted(bad)]
        mask = [it.sha not in bad for it in items]
        for it in items:
            if it.sha in bad:
                skipped.append({"path": it.path, "reason": "same pixels also filed under another class"})
        items = [it for it, k in zip(items, mask) if k]
        if images is not None:
            images = images[np.array(mask, dtype=bool)]
    ds.items, ds.skipped, ds.images, ds.conflicts = items, skipped, images, conflicts
    empty = [c for c, n in ds.counts().items() if n == 0]
    if empty:
        raise DataError(f"class folder(s) {', '.join(empty)} have no usable image "
                        f"({len(skipped)} file(s) skipped)", "check the files in that folder")
    return ds
