"""Where a face crop came from, and under which licence: one table for the whole toolkit.

A file's *source* is its name's prefix before the first ``_`` when that prefix is a known source
of :data:`SOURCES` (``amvd_12_3.jpg`` -> ``amvd``, ``mfn_00042.jpg`` -> ``mfn``), else the name of
the data root it came from (``facemask-dev``: its ``Augmented_130_939150.png`` and
``image_10.png`` are not sources of their own). A new set with a prefix gets a row in the table. Per-source evaluation groups test images by it, because a model can
learn which set a photo came from instead of where the mask sits; the licence notes (model card,
pipeline summary) come from it because the MaskedFace-Net crops are for non-commercial use only.
"""

from __future__ import annotations

from pathlib import PurePosixPath

__all__ = ["SOURCES", "source_of", "is_noncommercial", "licence_notes", "run_licence_notes", "run_sources",
           "DEFAULT_GROUP_BY"]

# Known file-name prefixes (facemask-3class README). Anything else: "unknown" licence, no note.
SOURCES: dict[str, dict] = {
    "amvd": {"name": "Kaggle Face Mask Detection (andrewmvd)", "licence": "CC0",
             "noncommercial": False},
    "mfn": {"name": "MaskedFace-Net (Cabani et al.)", "licence": "CC BY-NC-SA 4.0",
            "noncommercial": True},
}

# `<source>_<photo>_<face>.<ext>`: every face crop of one photo gets the key `<source>_<photo>`,
# so the crops of one photo stay in one split (data.splits). Names without a face number
# (`mfn_<photo>.jpg`, `0129.png`) do not match and stay their own group.
DEFAULT_GROUP_BY = r"^([A-Za-z][A-Za-z0-9]*_\d+)_\d+\.[^.]+$"

def source_of(path: str, root: str | None = None) -> str:
    """The source of a file: its name's known prefix (``amvd``), else its root's folder name."""
    prefix = PurePosixPath(path).name.split("_", 1)[0].lower()
    if prefix in SOURCES:
        return prefix
    return PurePosixPath(str(root)).name if root else "-"


def is_noncommercial(path: str) -> bool:
    """True for a file of a source whose licence forbids commercial use (``mfn_*``)."""
    return bool(SOURCES.get(source_of(path), {}).get("noncommercial"))


def licence_notes(paths) -> list[str]:
    """One line per non-commercial source among ``paths`` (the files a model was trained on)."""
    counts: dict[str, int] = {}
    for p in paths:
        if is_noncommercial(p):
            s = source_of(p)
            counts[s] = counts.get(s, 0) + 1
    return [f"NON-COMMERCIAL USE ONLY: trained on {n} {SOURCES[s]['name']} image(s) ({s}_*, "
            f"{SOURCES[s]['licence']}); retrain with --exclude-noncommercial for a model free of them"
            for s, n in sorted(counts.items())]


def run_licence_notes(run_dir) -> list[str]:
    """The licence notes of a trained run: from the files it learned from and chose its epoch on
    (``split.json``'s train and validation parts; else every file of ``manifest.json``)."""
    import json
    from pathlib import Path

    run_dir = Path(run_dir)
    split, manifest = run_dir / "split.json", run_dir / "manifest.json"
    try:
        if split.is_file():
            s = json.loads(split.read_text())
            return licence_notes(p for part in ("train", "val") for p, _ in s.get(part, []))
        if manifest.is_file():
            return licence_notes(it["path"] for it in json.loads(manifest.read_text()).get("used", []))
    except (OSError, ValueError, TypeError, KeyError):
        pass  # an unreadable record: no note rather than a failed conversion; train rewrites them
    return []


def run_sources(run_dir, paths, data_root: str | None = None) -> list[str]:
    """The source of each of ``paths`` (files of a run's data set), the root taken from the run's
    ``manifest.json`` (several roots) or ``data_root``."""
    import json
    from pathlib import Path

    roots: dict[str, str] = {}
    manifest = Path(run_dir) / "manifest.json" if run_dir else None
    if manifest is not None and manifest.is_file():
        try:
            m = json.loads(manifest.read_text())
            roots = {it["path"]: it.get("root") or m.get("root") for it in m.get("used", [])}
            data_root = data_root or m.get("root")
        except (OSError, ValueError, TypeError, KeyError):
            roots = {}
    return [source_of(p, roots.get(p) or data_root) for p in paths]
