"""Deterministic, stratified, duplicate-aware train/val/test splits, saved as ``split.json``.

Two schemes:

- ``stratified`` (default): per class, groups are shuffled with the seed and dealt into
  train/val/test by the requested fractions, so a group never straddles splits and every class
  keeps its share. A group is the files with identical pixels, joined (transitively) with the
  files whose names give the same key under ``group_by``: by default every face crop of one photo
  (``amvd_<photo>_<face>.jpg``, :data:`~facemask_edge.data.sources.DEFAULT_GROUP_BY`), keyed by
  root and photo, across classes, since one street photo holds masked and unmasked faces. With
  ``near_duplicates`` (bits), the near-duplicate clusters of :mod:`facemask_edge.data.hygiene`
  (perceptual hash, mirror included) join the same groups, so that a recompressed, resized or
  mirrored copy of a test image cannot sit in train; off by default (the split is unchanged).
- ``seed-notebook``: the original study's notebooks. ``image_dataset_from_directory`` shuffles the
  file list with ``RandomState(seed)``, keeps the last 20 % for validation, and the notebooks then
  take the first 1/5 of the validation batches (batch 32) as the test set. Reproduced here at file
  level. Note the notebooks re-shuffled the validation set every epoch, so their take/skip did not
  keep test and validation apart; here it is fixed once. Duplicates may straddle this split, as they
  did in the study; ``split.json`` counts them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from facemask_edge.data.ingest import Dataset
from facemask_edge.data.sources import DEFAULT_GROUP_BY
from facemask_edge.errors import DataError

__all__ = ["make_split", "save_split", "load_split", "read_split_file", "split_indices", "split_groups", "SCHEMES",
           "DEFAULT_GROUP_BY", "UnionFind"]

SCHEMES = ("stratified", "seed-notebook")
NOTEBOOK_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


class UnionFind:
    """Disjoint sets of hashable keys; the smallest key represents its set (deterministic)."""

    def __init__(self):
        self.parent: dict = {}

    def find(self, k):
        parent = self.parent
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def split_groups(ds: Dataset, group_by: str | None = DEFAULT_GROUP_BY,
                 join: list[list[str]] | None = None) -> dict[str, str]:
    """The group of every file (path -> key): files in one group always land in one split.

    Identical pixels form a group (key: the pixel hash). With ``group_by`` (a regular
    expression searched in the file *name*; its first capture group, or the whole match, is the
    key), files of one root whose names give the same key join the same group; groups that share
    a file merge. ``None`` or ``""``: pixel groups only. ``join``: lists of paths (near-duplicate
    clusters) whose files join one group too.

    Raises:
        DataError: ``group_by`` is not a valid regular expression.
    """
    uf = UnionFind()
    find, union = uf.find, uf.union

    rx = None
    if group_by:
        try:
            rx = re.compile(group_by)
        except re.error as exc:
            raise DataError(f"--group-by {group_by!r} is not a regular expression: {exc}",
                            r"e.g. --group-by '^(amvd_\d+)_\d+\.' (the capture group names the photo)") from None
    for it in ds.items:
        find(it.sha)
        if rx is not None:
            m = rx.search(Path(it.path).name)
            if m:
                key = m.group(1) if m.groups() and m.group(1) is not None else m.group(0)
                # The root in the key keeps photo 12 of one data set apart from photo 12 of another.
                union(it.sha, f"~photo:{it.root or ''}|{key}")
    sha = {it.path: it.sha for it in ds.items}
    for paths in join or ():
        keys = [sha[p] for p in paths if p in sha]
        for k in keys[1:]:
            union(keys[0], k)
    return {it.path: find(it.sha) for it in ds.items}


def _stratified(ds: Dataset, fractions, seed: int, group_of: dict[str, str]) -> dict[str, list[str]]:
    rng = np.random.RandomState(seed)
    out = {"train": [], "val": [], "test": []}
    assigned: dict[str, str] = {}  # group -> split, for groups that span classes
    for label in range(len(ds.classes)):
        groups: dict[str, list[str]] = {}
        for it in ds.items:
            if it.label == label:
                groups.setdefault(group_of[it.path], []).append(it.path)
        keys = sorted(groups)
        rng.shuffle(keys)
        n = sum(len(groups[k]) for k in keys)
        target_val = round(n * fractions[1])
        target_test = round(n * fractions[2])
        counts = {"test": 0, "val": 0}
        # Groups already placed by an earlier class (a photo with faces of several classes) go
        # where they are and count towards this class's shares first.
        for k in keys:
            if k in assigned:
                name = assigned[k]
                out[name].extend(sorted(groups[k]))
                if name in counts:
                    counts[name] += len(groups[k])
        for k in keys:
            if k in assigned:
                continue
            # Fill test, then val, then the rest to train, counting files not groups.
            if counts["test"] < target_test:
                name = "test"
            elif counts["val"] < target_val:
                name = "val"
            else:
                name = "train"
            assigned[k] = name
            out[name].extend(sorted(groups[k]))
            if name in counts:
                counts[name] += len(groups[k])
    return {k: sorted(v) for k, v in out.items()}


def _seed_notebook(ds: Dataset, seed: int) -> dict[str, list[str]]:
    # keras.utils.image_dataset_from_directory: files in class order, then sorted walk, only
    # known extensions; shuffled with RandomState(seed); last 20 % is the validation subset.
    paths = [it.path for it in sorted(ds.items, key=lambda it: (it.label, it.path))
             if Path(it.path).suffix.lower() in NOTEBOOK_EXTENSIONS]
    rng = np.random.RandomState(seed)
    rng.shuffle(paths)
    n_val = int(0.2 * len(paths))
    train, val = paths[:-n_val], paths[-n_val:]
    val_batches = int(np.ceil(len(val) / 32))
    n_test_batches = val_batches // 5
    test, val = val[: n_test_batches * 32], val[n_test_batches * 32:]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def make_split(ds: Dataset, scheme: str = "stratified", seed: int = 1337,
               fractions: tuple[float, float, float] = (0.70, 0.15, 0.15),
               group_by: str | None = DEFAULT_GROUP_BY, near_duplicates: int | None = None) -> dict:
    """Split a scanned data set.

    Args:
        group_by: see :func:`split_groups` (the stratified scheme keeps each group in one split;
            the seed-notebook scheme reproduces the study and ignores it, counting what straddles).
        near_duplicates: also keep images within this Hamming distance (bits of the 64-bit
            perceptual hash, mirror included) in one group; ``None``: off. Nothing is dropped.

    Returns:
        The ``split.json`` content: scheme, seed, fractions, classes, ``group_by``, and for each
        of ``train``/``val``/``test`` the list of file paths (relative to the data root).
    """
    if scheme not in SCHEMES:
        raise DataError(f"unknown split {scheme!r}", f"use one of {', '.join(SCHEMES)}")
    if abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise DataError(f"split fractions {fractions} must be non-negative and add up to 1")
    join = None
    if near_duplicates is not None:
        from facemask_edge.data.hygiene import near_duplicate_groups

        join = near_duplicate_groups(ds, near_duplicates)
    group_of = split_groups(ds, group_by, join)
    parts = _stratified(ds, fractions, seed, group_of) if scheme == "stratified" \
        else _seed_notebook(ds, seed)
    sha = {it.path: it.sha for it in ds.items}
    where: dict[str, set[str]] = {}
    for name, paths in parts.items():
        for p in paths:
            where.setdefault(sha[p], set()).add(name)
    straddling = sum(1 for s in where.values() if len(s) > 1)
    where_group: dict[str, set[str]] = {}
    for name, paths in parts.items():
        for p in paths:
            where_group.setdefault(group_of[p], set()).add(name)
    groups_straddling = sum(1 for s in where_group.values() if len(s) > 1)
    label = {it.path: ds.classes[it.label] for it in ds.items}
    return {
        "scheme": scheme,
        "seed": seed,
        "fractions": list(fractions) if scheme == "stratified" else [0.8, 0.16, 0.04],
        "classes": ds.classes,
        "data_root": str(ds.root),
        "counts": {k: len(v) for k, v in parts.items()},
        "duplicate_groups_straddling": straddling,
        "group_by": group_by or None,
        "groups": len(where_group),
        "groups_straddling": groups_straddling,
        # Only when on: a default split.json stays byte for byte what it was.
        **({"near_duplicates": near_duplicates,
            "near_duplicate_clusters": len(join)} if near_duplicates is not None else {}),
        **{k: [[p, label[p]] for p in v] for k, v in parts.items()},
    }


def save_split(split: dict, run_dir: Path) -> Path:
    from facemask_edge.artifacts.files import write_json

    return write_json(Path(run_dir) / "split.json", split)


def load_split(run_dir: Path) -> dict:
    """A run folder's ``split.json`` (see :func:`read_split_file`)."""
    path = Path(run_dir) / "split.json"
    if not path.exists():
        raise DataError(f"{path} not found", "train the run first: facemask-edge train --out RUN_DIR")
    return read_split_file(path)


def read_split_file(path: Path) -> dict:
    """Read and check a ``split.json``: train/val/test lists of ``[path, class]``.

    Raises:
        DataError: the file cannot be read or is not a split (one line, never a traceback).
    """
    path = Path(path)
    hint = "pass a trained run folder or its split.json (facemask-edge train writes it)"
    try:
        split = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DataError(f"cannot read {path} as a split: {exc}", hint) from None
    ok = isinstance(split, dict) and all(
        isinstance(split.get(k), list) and all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                               for e in split[k]) for k in ("train", "val", "test"))
    if not ok:
        raise DataError(f"{path} is not a split (train/val/test lists of [path, class])", hint)
    return split


def split_indices(ds: Dataset, split: dict) -> dict[str, np.ndarray]:
    """Map a saved split onto a scanned data set: item indices of train/val/test.

    Raises:
        DataError: files of the split are missing from the data set.
    """
    index = {it.path: i for i, it in enumerate(ds.items)}
    out = {}
    for name in ("train", "val", "test"):
        missing = [p for p, _ in split[name] if p not in index]
        if missing:
            raise DataError(f"{len(missing)} file(s) of the {name} split are not in {ds.root} "
                            f"(first: {missing[0]})", "pass the same --data the run was trained on")
        out[name] = np.array([index[p] for p, _ in split[name]], dtype=np.int64)
    return out
