"""Reconcile an Edge Impulse project with the data set: ``facemask-edge ei status [--repair]``.

The ledger says what this machine uploaded; it does not see samples deleted, relabelled or moved
in Studio, nor survive a lost cache. So the project itself is asked: ``GET /raw-data`` per
category (training, testing) lists every sample with its label, category, ``sha256Hash`` and
metadata, and each sample is matched to an image of the data set by, in order:

1. the ``sha256`` in its ``x-metadata`` (every upload since issue 15 sends it);
2. its sample id, if the ledger recorded it;
3. its ``sha256Hash`` against the hash of the bytes we send. Guess: for an image sent through
   the ingestion ``/files`` endpoint this is the hash of the file's bytes (the API describes it
   as "SHA 256 hash (including CBOR envelope if applicable)"); the two steps above do not depend
   on that guess.

Then: **missing** (an image with no sample), **extra** (a sample with no image: never deleted,
it may be the user's), **wrong label**, **wrong category** (only when the data set says where
an image goes: ``--split-from`` or ``--category training|testing``). ``--repair`` uploads the
missing images, relabels (``POST /raw-data/{id}/edit-label``) and moves (``POST
/raw-data/{id}/move``) the wrong ones, and writes every matched sample into the ledger, so a
lost ledger is rebuilt and the next ``upload-data`` sends nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from facemask_edge.edge_impulse.ledger import Ledger
from facemask_edge.edge_impulse.redact import redact_clip
from facemask_edge.edge_impulse.studio import Studio
from facemask_edge.edge_impulse.upload import UploadItem, UploadPlan, _payload

__all__ = ["StatusReport", "list_project_samples", "reconcile", "repair", "LISTED_CATEGORIES"]

LISTED_CATEGORIES = ("training", "testing")


@dataclass
class StatusReport:
    """How the project differs from the data set.

    Attributes:
        project_id: the project.
        expected: distinct images of the data set.
        samples: samples listed in the project.
        ok: images stored once with the right label and category.
        missing: images with no sample.
        extra: samples matching no image (dicts as listed).
        wrong_label: ``(image, sample)`` pairs.
        wrong_category: ``(image, sample)`` pairs.
        matched: every ``(image, sample)`` pair found.
    """

    project_id: int
    expected: int
    samples: int
    ok: int = 0
    missing: list[UploadItem] = field(default_factory=list)
    extra: list[dict] = field(default_factory=list)
    wrong_label: list[tuple[UploadItem, dict]] = field(default_factory=list)
    wrong_category: list[tuple[UploadItem, dict]] = field(default_factory=list)
    matched: list[tuple[UploadItem, dict]] = field(default_factory=list)
    stale_ledger: int = 0

    @property
    def in_sync(self) -> bool:
        """Nothing that ``--repair`` could fix is left (extra samples are the user's call)."""
        return not (self.missing or self.wrong_label or self.wrong_category)

    def lines(self, limit: int = 20) -> list[str]:
        """The report, first line the totals."""
        out = [f"project {self.project_id}: {self.samples} samples for {self.expected} distinct "
               f"images: ok {self.ok}, missing {len(self.missing)}, extra {len(self.extra)}, "
               f"wrong label {len(self.wrong_label)}, wrong category {len(self.wrong_category)}"]

        def section(title, rows):
            if rows:
                out.append(f"  {title}:")
                out.extend(f"    {r}" for r in rows[:limit])
                if len(rows) > limit:
                    out.append(f"    ... and {len(rows) - limit} more")

        section("missing (not in the project)",
                [f"{it.path} ({it.label}, {it.category})" for it in self.missing])
        section("wrong label", [f"{it.path}: sample {s.get('id')} is labelled "
                                f"{_q(s.get('label'))}, should be {_q(it.label)}"
                                for it, s in self.wrong_label])
        section("wrong category", [f"{it.path}: sample {s.get('id')} is in "
                                   f"{s.get('category')}, should be in {it.category}"
                                   for it, s in self.wrong_category])
        section("extra (no such image in the data set; not deleted)",
                [f"sample {s.get('id')} {_q(s.get('filename'))} ({s.get('label')}, "
                 f"{s.get('category')})" for s in self.extra])
        if self.stale_ledger:
            out.append(f"  {self.stale_ledger} ledger entries point at samples that are gone "
                       "(upload-data skips those images; --repair uploads them)")
        return out


def _q(v) -> str:
    return "'" + redact_clip(str(v), 80) + "'"


def list_project_samples(studio: Studio) -> list[dict]:
    """Every training and testing sample of the project."""
    out: list[dict] = []
    for cat in LISTED_CATEGORIES:
        out += studio.samples(cat)
    return out


def _sent_sha(root, item: UploadItem) -> str:
    """Hash of the bytes the upload sends (JPEG/PNG as they are; others re-encoded as PNG)."""
    if item.format.upper() in ("JPEG", "MPO", "PNG"):
        return item.sha256
    return hashlib.sha256(_payload(root, item)[1]).hexdigest()


def reconcile(plan: UploadPlan, samples: list[dict], project_id: int,
              ledger: Ledger | None = None) -> StatusReport:
    """Compare the project's samples with the planned images (see the module docstring)."""
    rep = StatusReport(project_id, len(plan.items), len(samples))
    by_sha = {it.sha256: it for it in plan.items}
    by_id: dict[int, UploadItem] = {}
    if ledger is not None:
        for sha, entry in ledger.entries.items():
            if sha in by_sha and isinstance(entry.get("sample_id"), int):
                by_id[entry["sample_id"]] = by_sha[sha]
    found: dict[str, dict] = {}  # image sha -> its sample
    unmatched: list[dict] = []

    def take(item: UploadItem, s: dict) -> bool:
        if item.sha256 in found:
            return False  # a second sample of the same image: an extra copy
        found[item.sha256] = s
        return True

    for s in samples:
        meta = s.get("metadata") if isinstance(s.get("metadata"), dict) else {}
        item = by_sha.get(str(meta.get("sha256", ""))) or by_id.get(s.get("id"))
        if item is None or not take(item, s):
            unmatched.append(s)
    if unmatched:
        rest = [it for it in plan.items if it.sha256 not in found]
        sent = {}
        for it in rest:
            sent.setdefault(_sent_sha(plan.root, it), it)
        still = []
        for s in unmatched:
            item = sent.get(str(s.get("sha256Hash", "")))
            if item is None or not take(item, s):
                still.append(s)
        unmatched = still
    rep.extra = unmatched
    ids = {s.get("id") for s in samples}
    for it in plan.items:
        s = found.get(it.sha256)
        if s is None:
            rep.missing.append(it)
            entry = ledger.get(it.sha256) if ledger is not None else None
            if entry is not None and entry.get("sample_id") not in ids:
                rep.stale_ledger += 1
            continue
        rep.matched.append((it, s))
        bad = False
        if s.get("label") != it.label:
            rep.wrong_label.append((it, s))
            bad = True
        if it.category in LISTED_CATEGORIES and s.get("category") != it.category:
            rep.wrong_category.append((it, s))
            bad = True
        rep.ok += not bad
    return rep


@dataclass
class RepairResult:
    """What ``--repair`` did."""

    relabelled: int = 0
    moved: int = 0
    uploaded: int = 0
    ledger_written: int = 0
    failed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"repaired: uploaded {self.uploaded}, relabelled {self.relabelled}, moved "
               f"{self.moved}; ledger entries written {self.ledger_written}"]
        out += [f"  failed: {f}" for f in self.failed[:20]]
        return out


def repair(studio: Studio, plan: UploadPlan, rep: StatusReport, ledger: Ledger,
           upload) -> RepairResult:
    """Fix what can be fixed; record every matched sample in the ledger.

    Args:
        studio: the project's studio client.
        plan: the data set.
        rep: from :func:`reconcile`.
        ledger: the open ledger (rebuilt from the listing where it lacks an entry).
        upload: ``callable(UploadPlan) -> UploadSummary`` that sends the missing images (the
            normal resumable upload, ``recheck`` on: the ledger may still list them).
    """
    from facemask_edge.errors import EdgeImpulseError

    res = RepairResult()
    pid = rep.project_id
    for it, s in rep.wrong_label:
        try:
            studio.post(f"/raw-data/{int(s['id'])}/edit-label", "relabel",
                        json={"label": it.label})
            s["label"] = it.label
            res.relabelled += 1
        except EdgeImpulseError as exc:
            res.failed.append(f"relabel {it.path}: {exc.message}")
    for it, s in rep.wrong_category:
        try:
            studio.post(f"/raw-data/{int(s['id'])}/move", "move",
                        json={"newCategory": it.category})
            s["category"] = it.category
            res.moved += 1
        except EdgeImpulseError as exc:
            res.failed.append(f"move {it.path}: {exc.message}")
    for it, s in rep.matched:
        entry = ledger.get(it.sha256)
        if entry is None or entry.get("sample_id") != s.get("id") \
                or entry.get("label") != s.get("label") \
                or entry.get("category") != s.get("category"):
            ledger.record(it.sha256, sample_id=s.get("id"), label=s.get("label"),
                          category=s.get("category"), file=it.path, copies=it.copies,
                          project=pid, status="from-listing")
            res.ledger_written += 1
    if rep.missing:
        sub = UploadPlan(plan.root, list(rep.missing), len(rep.missing), [])
        summary = upload(sub)
        res.uploaded = summary.uploaded + summary.already_there
        res.ledger_written += summary.uploaded + summary.already_there
        res.failed += [f"upload {p}: {e}" for p, e in summary.failed]
    return res
