"""Data hygiene: near-duplicate images, labels that contradict each other, and split leakage.

Why: a test image whose resized, recompressed or mirrored copy sits in the training split is not
an unseen image, so the test figure overstates what the model does on new photos; and two copies
of one face filed under two classes is a label one of them got wrong. Exact duplicates (same
pixels) are already grouped by the scan (``Item.sha``); this module finds the *near* ones with a
64-bit perceptual hash (pHash: the signs of the lowest 8x8 DCT frequencies of a 32x32 grayscale
thumbnail against their median), which survives resizing, JPEG recompression and small colour
changes. Training flips images horizontally, so a mirrored copy counts as a copy too: the
distance of two images is the smaller Hamming distance of one to the other and to its mirror.

The thumbnail is the scan's own device preprocessing (centre square crop, box resize) at
:data:`HASH_SIZE` in grayscale, decoded once and cached like every other scan. Images whose
distance is within the threshold are joined (single linkage, like the split's groups) into
clusters; :func:`audit` lists them, those that straddle a split, and those spanning classes. The
split can keep a cluster in one split (``make_split(near_duplicates=...)``), which joins these
clusters into the groups ``--group-by`` already keeps together. Nothing here drops an image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facemask_edge.data.ingest import Dataset, scan_dataset
from facemask_edge.data.preprocess import box_resize
from facemask_edge.errors import DataError
from facemask_edge.progress import progress

__all__ = ["HASH_SIZE", "DEFAULT_DISTANCE", "check_distance", "phash", "hash_dataset", "near_pairs", "clusters",
           "near_duplicate_groups", "audit", "Audit", "write_report", "markdown", "contact_sheet"]

HASH_SIZE = 32
#: Hamming distance (of 64 bits) up to which two images are near-duplicates. Looked at on
#: facemask-dev (README, "Data hygiene"): sampled pairs at 0-4 bits were all the same photo
#: (recompressed, resized, rotated a few degrees, mirrored, another mask pasted on); at 6, all but
#: 2-3 of 20; at 8 about half were different people in the same pose (rendered 3D heads on black); from 10
#: the pairs multiply (42 at 6, 98 at 8, 300 at 10, 1,317 at 12) and the clusters chain into one.
#: The median-thresholded hash sets 32 of 64 bits, so distances are even: 6 and 7 are the same.
DEFAULT_DISTANCE = 6
MAX_DISTANCE = 24  # beyond this the list is mostly unrelated faces: refused rather than misread

_SPLITS = ("train", "val", "test")


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II basis (rows: frequencies), so that ``D @ x @ D.T`` is the 2-D DCT."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    d[0] /= np.sqrt(2)
    return d


_DCT = _dct_matrix(HASH_SIZE)
_BITS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def phash(gray: np.ndarray) -> np.ndarray:
    """64-bit perceptual hashes of grayscale thumbnails.

    Args:
        gray: uint8 ``(N, 32, 32)`` or ``(N, 32, 32, 1)`` (other sizes are box-resized to 32).

    Returns:
        uint64 ``(N,)``: bit set where a DCT coefficient of the lowest 8x8 frequencies is above
        their median (the DC term included, as in the common pHash).
    """
    g = np.asarray(gray)
    if g.ndim == 4:
        g = g[..., 0]
    if g.shape[1:] != (HASH_SIZE, HASH_SIZE):
        g = np.stack([box_resize(x[..., None], HASH_SIZE)[..., 0] for x in g])
    f = g.astype(np.float64)
    coeffs = np.einsum("ai,nij,bj->nab", _DCT[:8], f, _DCT[:8]).reshape(len(f), 64)
    bits = coeffs > np.median(coeffs, axis=1, keepdims=True)
    return (bits.astype(np.uint64) * _BITS).sum(axis=1, dtype=np.uint64)


@dataclass
class Hashes:
    """The data set's items, their hashes and the hashes of their mirror images."""

    ds: Dataset
    hashes: np.ndarray  # uint64 (N,)
    mirrored: np.ndarray  # uint64 (N,)


def hash_dataset(data, exclude_noncommercial: bool = False) -> Hashes:
    """Scan a data set at :data:`HASH_SIZE` grayscale (cached) and hash every usable image."""
    ds = scan_dataset(data, size=HASH_SIZE, color="grayscale",
                      exclude_noncommercial=exclude_noncommercial)
    return Hashes(ds, phash(ds.images), phash(ds.images[:, :, ::-1]))


def near_pairs(h: Hashes, distance: int) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, bits)``, ``i < j``, whose distance (mirror included) is at most ``distance``.

    All pairs are compared (4,071 images: 8 M pairs, well under a second): no index to miss one.
    """
    check_distance(distance)
    n = len(h.hashes)
    out: list[tuple[int, int, int]] = []
    step = 256
    with progress(f"comparing {n} hashes", total=n, transient=True) as bar:
        for a in range(0, n, step):
            b = min(n, a + step)
            d = np.minimum(np.bitwise_count(h.hashes[a:b, None] ^ h.hashes[None, :]),
                           np.bitwise_count(h.hashes[a:b, None] ^ h.mirrored[None, :]))
            ii, jj = np.nonzero(d <= distance)
            keep = jj > ii + a
            out.extend(zip((ii[keep] + a).tolist(), jj[keep].tolist(), d[ii[keep], jj[keep]].tolist()))
            bar.advance(b - a)
    return out


def check_distance(distance) -> None:
    """Raise DataError unless ``distance`` is a whole number of bits in 0..MAX_DISTANCE."""
    if not isinstance(distance, (int, np.integer)) or not 0 <= distance <= MAX_DISTANCE:
        raise DataError(f"near-duplicate distance {distance!r} is out of range",
                        f"give 0..{MAX_DISTANCE} bits of the 64-bit hash (default {DEFAULT_DISTANCE})")


def clusters(n: int, pairs) -> list[list[int]]:
    """Single-linkage clusters of ``n`` items joined by ``pairs``: lists of 2+ indices, sorted."""
    from facemask_edge.data.splits import UnionFind

    uf = UnionFind()
    for i, j, *_ in pairs:
        uf.union(i, j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def near_duplicate_groups(ds: Dataset, distance: int) -> list[list[str]]:
    """Clusters of near-duplicate files of ``ds`` (paths), for the split to keep together.

    The hashes come from a scan of the same roots at :data:`HASH_SIZE` (cached), so the split
    and ``facemask-edge data --hygiene`` see the same clusters whatever the model's input size.
    """
    check_distance(distance)
    roots = [str(r) for r in (ds.roots or [ds.root])]
    h = hash_dataset(roots[0] if len(roots) == 1 else roots)
    present = {it.path for it in ds.items}
    paths = [it.path for it in h.ds.items]
    return [[paths[i] for i in c if paths[i] in present]
            for c in clusters(len(paths), near_pairs(h, distance))]


@dataclass
class Audit:
    """What :func:`audit` found; ``report`` is the JSON written as ``hygiene.json``."""

    report: dict
    pairs: list[dict] = field(default_factory=list)  # the suspicious pairs, most suspicious first

    def summary_line(self) -> str:
        r = self.report
        line = (f"hygiene: {r['images']} images, {r['exact']['extra_copies']} exact copies, "
                f"{r['near']['clusters']} near-duplicate clusters ({r['near']['files']} files, "
                f"distance <= {r['distance']}), {len(r['conflicting_labels'])} with conflicting labels")
        s = r.get("split")
        if s:
            per = ", ".join(f"{c} {n}" for c, n in s["test_with_train_duplicate"].items())
            line += (f"; {s['clusters_straddling']} straddle splits; test images with a near-duplicate "
                     f"in train: {s['test_with_train_duplicate_total']}/{s['counts']['test']} ({per})")
        return line + f"; {r['seconds']:.1f} s"


def audit(data, distance: int = DEFAULT_DISTANCE, split: dict | None = None,
          exclude_noncommercial: bool = False) -> Audit:
    """Near-duplicates, conflicting labels and (with ``split``) clusters straddling the split.

    Args:
        data: the ``--data`` value (one root or a list).
        distance: Hamming distance (bits of 64) up to which two images are near-duplicates.
        split: a ``split.json`` made on the same data set (its files must all be in it).
        exclude_noncommercial: as for the scan (use the run's value).

    Raises:
        DataError: bad distance, or the split's files are not in the data set.
    """
    from facemask_edge.data.splits import split_indices

    check_distance(distance)
    t0 = time.monotonic()
    h = hash_dataset(data, exclude_noncommercial)
    ds = h.ds
    where: dict[int, str] = {}
    if split is not None:
        for name, idx in split_indices(ds, split).items():
            where.update((int(i), name) for i in idx)
    pairs = near_pairs(h, distance)
    groups = clusters(len(ds.items), pairs)
    cls = [ds.classes[it.label] for it in ds.items]
    by_sha: dict[str, int] = {}
    for it in ds.items:
        by_sha[it.sha] = by_sha.get(it.sha, 0) + 1

    # Nearest-neighbour distance of every image (capped): shows where the threshold sits.
    nearest = np.full(len(ds.items), 64, np.int64)
    for i, j, d in pairs:
        nearest[i] = min(nearest[i], d)
        nearest[j] = min(nearest[j], d)

    cluster_of = {i: k for k, g in enumerate(groups) for i in g}
    widest = [0] * len(groups)
    for i, _, d in pairs:
        widest[cluster_of[i]] = max(widest[cluster_of[i]], d)
    out_clusters = []
    for k, g in enumerate(groups):
        out_clusters.append({
            "id": k,
            "files": [{"path": ds.items[i].path, "class": cls[i],
                       **({"split": where[i]} if i in where else {})} for i in g],
            "classes": sorted({cls[i] for i in g}),
            "splits": sorted({where[i] for i in g if i in where}, key=_SPLITS.index),
            "max_distance": widest[k],  # of its closest links (single linkage)
        })
    conflicting = [c["id"] for c in out_clusters if len(c["classes"]) > 1]
    report = {
        "data": [str(r) for r in (ds.roots or [ds.root])],
        "root": str(ds.root),  # the files' paths are relative to it
        "images": len(ds.items),
        "classes": ds.classes,
        "hash": "pHash 64-bit (8x8 DCT of a 32x32 grayscale centre crop), mirror included",
        "distance": distance,
        "exact": {"groups": sum(1 for n in by_sha.values() if n > 1),
                  "extra_copies": len(ds.items) - len(by_sha),
                  "conflicting_dropped_by_scan": ds.conflicts},
        "near": {"pairs": len(pairs), "clusters": len(groups), "files": sum(len(g) for g in groups),
                 "pairs_by_distance": {str(d): sum(1 for *_, x in pairs if x == d)
                                       for d in range(distance + 1)}},
        "nearest_neighbour_within": {str(d): int((nearest <= d).sum()) for d in range(distance + 1)},
        "conflicting_labels": conflicting,
        "clusters": out_clusters,
    }
    if split is not None:
        report["split"] = _split_report(ds, split, where, pairs, groups, cls)
    report["seconds"] = round(time.monotonic() - t0, 2)
    return Audit(report, _suspicious_pairs(ds, pairs, cls, where))


def _split_report(ds, split, where, pairs, groups, cls) -> dict:
    """Clusters straddling the split, per split pair, and test images with a copy in train."""
    pair_counts = {"train-val": 0, "train-test": 0, "val-test": 0}
    straddling = 0
    for g in groups:
        names = {where[i] for i in g if i in where}
        if len(names) > 1:
            straddling += 1
        for key in pair_counts:
            a, b = key.split("-")
            if a in names and b in names:
                pair_counts[key] += 1
    # Direct neighbours, not cluster membership: single linkage can chain two far images.
    test_hit: set[int] = set()
    for i, j, _ in pairs:
        for x, y in ((i, j), (j, i)):
            if where.get(x) == "test" and where.get(y) == "train":
                test_hit.add(x)
    per_class = {c: sum(1 for i in test_hit if cls[i] == c) for c in ds.classes}
    test_per_class = {c: sum(1 for i, s in where.items() if s == "test" and cls[i] == c)
                      for c in ds.classes}
    return {
        "scheme": split.get("scheme"), "seed": split.get("seed"), "group_by": split.get("group_by"),
        "near_duplicates": split.get("near_duplicates"),
        "counts": {s: sum(1 for v in where.values() if v == s) for s in _SPLITS},
        "clusters_straddling": straddling,
        "clusters_straddling_by_pair": pair_counts,
        "test_with_train_duplicate": per_class,
        "test_with_train_duplicate_total": len(test_hit),
        "test_per_class": test_per_class,
        "test_with_train_duplicate_files": sorted(ds.items[i].path for i in test_hit),
    }


def _suspicious_pairs(ds, pairs, cls, where) -> list[dict]:
    """Conflicting labels first, then test-train copies, then other cross-split pairs; within
    each, the largest distance first: the borderline pairs show whether the threshold is right."""
    def rank(p):
        i, j, d = p
        conflict = cls[i] != cls[j]
        sides = {where.get(i), where.get(j)}
        leak = sides == {"train", "test"}
        cross = len(sides) > 1 and None not in sides
        return (not conflict, not leak, not cross, -d, i)

    out = []
    for i, j, d in sorted(pairs, key=rank):
        kind = ("conflicting label" if cls[i] != cls[j] else
                "train-test" if {where.get(i), where.get(j)} == {"train", "test"} else
                "cross-split" if where.get(i) != where.get(j) else "same split")
        out.append({"a": ds.items[i].path, "b": ds.items[j].path, "distance": d, "kind": kind,
                    "class_a": cls[i], "class_b": cls[j],
                    "split_a": where.get(i), "split_b": where.get(j),
                    "exact": ds.items[i].sha == ds.items[j].sha})
    return out


def write_report(result: Audit, out_dir: Path, sheet: int = 24) -> list[Path]:
    """Write ``hygiene.json``, ``hygiene.md`` and (``sheet`` > 0) ``hygiene.png`` in ``out_dir``.

    Returns:
        The files written.
    """
    from facemask_edge.artifacts.files import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {**result.report, "suspicious_pairs": result.pairs[:500]}
    written = [write_json(out_dir / "hygiene.json", report)]
    (out_dir / "hygiene.md").write_text(markdown(result))
    written.append(out_dir / "hygiene.md")
    if sheet and result.pairs:
        written.append(contact_sheet(result, out_dir / "hygiene.png", sheet))
    return written


def markdown(result: Audit) -> str:
    """The report as Markdown (``hygiene.md``): counts, conflicting labels, leaked test images."""
    r = result.report
    lines = ["# Data hygiene", "",
             f"{r['images']} images in {', '.join(r['data'])}; {r['hash']}; near-duplicate: "
             f"distance <= {r['distance']} bits. Measured in {r['seconds']:.1f} s.", "",
             "| what | count |", "|---|---|",
             f"| exact-duplicate groups (extra copies) | {r['exact']['groups']} ({r['exact']['extra_copies']}) |",
             f"| same pixels under two classes (dropped by the scan) | {len(r['exact']['conflicting_dropped_by_scan'])} |",
             f"| near-duplicate pairs | {r['near']['pairs']} |",
             f"| near-duplicate clusters (files) | {r['near']['clusters']} ({r['near']['files']}) |",
             f"| clusters with conflicting labels | {len(r['conflicting_labels'])} |"]
    s = r.get("split")
    if s:
        lines += [f"| clusters straddling the split | {s['clusters_straddling']} |"]
        lines += [f"| clusters in both {k} | {v} |" for k, v in s["clusters_straddling_by_pair"].items()]
        lines += [f"| test images with a near-duplicate in train: {c} | {n} of {s['test_per_class'][c]} |"
                  for c, n in s["test_with_train_duplicate"].items()]
    lines += ["", "Pairs by distance: " + ", ".join(f"{d}: {n}" for d, n in r["near"]["pairs_by_distance"].items()),
              ""]
    by_id = {c["id"]: c for c in r["clusters"]}
    if r["conflicting_labels"]:
        lines += ["## Conflicting labels", "", "| cluster | files (class, split) |", "|---|---|"]
        for k in r["conflicting_labels"]:
            files = "; ".join(f"`{f['path']}` ({f['class']}{', ' + f['split'] if 'split' in f else ''})"
                              for f in by_id[k]["files"][:8])
            more = len(by_id[k]["files"]) - 8
            lines.append(f"| {k} | {files}{f'; ... {more} more' if more > 0 else ''} |")
        lines.append("")
    if s and s["test_with_train_duplicate_files"]:
        lines += ["## Test images with a near-duplicate in train", ""]
        lines += [f"- `{p}`" for p in s["test_with_train_duplicate_files"][:200]]
        if len(s["test_with_train_duplicate_files"]) > 200:
            lines.append(f"- ... {len(s['test_with_train_duplicate_files']) - 200} more (hygiene.json)")
        lines.append("")
    return "\n".join(lines) + "\n"


def contact_sheet(result: Audit, path: Path, n: int = 24, thumb: int = 112) -> Path:
    """A PNG of the ``n`` most suspicious pairs side by side, with distance, class and split."""
    from PIL import Image, ImageDraw

    from facemask_edge.data.images import decode_image

    base = Path(result.report["root"])

    def tile(rel: str) -> Image.Image:
        try:
            img = Image.fromarray(decode_image(base / rel).rgb)
        except (OSError, ValueError):
            img = Image.new("RGB", (thumb, thumb), (128, 128, 128))
        img.thumbnail((thumb, thumb))
        canvas = Image.new("RGB", (thumb, thumb), (255, 255, 255))
        canvas.paste(img, ((thumb - img.width) // 2, (thumb - img.height) // 2))
        return canvas

    pairs = result.pairs[:n]
    cols = 2  # pairs per row
    text_h = 30
    cell_w, cell_h = 2 * thumb + 12, thumb + text_h
    rows = (len(pairs) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell_w + 8, rows * cell_h + 8), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, p in enumerate(pairs):
        x, y = 4 + (k % cols) * cell_w, 4 + (k // cols) * cell_h
        sheet.paste(tile(p["a"]), (x, y))
        sheet.paste(tile(p["b"]), (x + thumb + 2, y))
        colour = (200, 0, 0) if p["kind"] in ("conflicting label", "train-test") else (0, 0, 0)
        draw.text((x, y + thumb + 1), f"d={p['distance']} {p['kind']}", fill=colour)
        draw.text((x, y + thumb + 14), f"{p['class_a']}/{p['split_a'] or '-'}  |  "
                                        f"{p['class_b']}/{p['split_b'] or '-'}", fill=(60, 60, 60))
    path = Path(path)
    sheet.save(path)
    return path
