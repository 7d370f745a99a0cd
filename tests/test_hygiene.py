"""Data hygiene: near-duplicates by perceptual hash, conflicting labels, split leakage, and the
split switch that keeps a near-duplicate cluster in one split. Synthetic images, no TensorFlow."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from facemask_edge.cli import main
from facemask_edge.data.hygiene import DEFAULT_DISTANCE, audit, near_duplicate_groups
from facemask_edge.data.ingest import scan_dataset
from facemask_edge.data.splits import make_split
from facemask_edge.testing import draw_face

PER_CLASS = 30


def scene_face(rng, masked: bool, size: int = 128) -> Image.Image:
    """A synthetic face in a scene of its own: gradient background, clutter, offset and scale.

    Faces alone on a flat background differ mostly in colour, which a grayscale hash ignores by
    design; photos differ by their scene, which this stands in for.
    """
    yy, xx = np.mgrid[0:size, 0:size] / size
    a = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(a) * xx + np.sin(a) * yy
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    base = rng.randint(0, 256, 3)[None, None, :] * (0.4 + 0.6 * ramp[..., None])
    img = Image.fromarray(base.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.randint(0, size, 2)
        w, h = rng.randint(size // 8, size // 2, 2)
        shape = d.ellipse if rng.rand() < 0.5 else d.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.randint(0, 256, 3)))
    face = draw_face(rng, masked, int(size * rng.uniform(0.45, 0.7)))
    ox, oy = rng.randint(0, size - face.width + 1, 2)
    img.paste(face, (int(ox), int(oy)))
    return img


@pytest.fixture(scope="module")
def hygiene_data(tmp_path_factory):
    """Distinct faces per class plus copies of some: ``copies`` maps each copy to its original."""
    root = tmp_path_factory.mktemp("hyg") / "data"
    rng = np.random.RandomState(7)
    names = {}
    for cls in ("with_mask", "without_mask"):
        (root / cls).mkdir(parents=True)
        for i in range(PER_CLASS):
            name = f"{cls}/{cls[:4]}{i:03d}.png"
            scene_face(rng, cls == "with_mask", 128).save(root / name)
            names[cls, i] = name
    copies = {}

    def copy(src, dst, how):
        img = Image.open(root / src).convert("RGB")
        if how == "bmp":  # same pixels, other bytes: an exact duplicate
            img.save(root / dst, "BMP")
        elif how == "jpeg":
            img.save(root / dst, "JPEG", quality=70)
        elif how == "resized":
            img.resize((102, 102), Image.BILINEAR).save(root / dst, "JPEG", quality=85)
        elif how == "mirrored":
            img.transpose(Image.FLIP_LEFT_RIGHT).save(root / dst)
        copies[dst] = src

    copy(names["with_mask", 0], "with_mask/c_exact.bmp", "bmp")
    copy(names["with_mask", 1], "with_mask/c_jpeg.jpg", "jpeg")
    copy(names["with_mask", 2], "with_mask/c_resized.jpg", "resized")
    copy(names["with_mask", 3], "with_mask/c_mirror.png", "mirrored")
    # The same face filed under the other class, resized: a suspicious label.
    copy(names["with_mask", 4], "without_mask/c_conflict.jpg", "resized")
    for i in range(5, 17):  # more pairs, so that the default split separates some of them
        cls = "with_mask" if i % 2 else "without_mask"
        copy(names[cls, i], f"{cls}/c_more{i:03d}.jpg", "jpeg")
    return root, copies


def _clusters(report):
    return [sorted(f["path"] for f in c["files"]) for c in report["clusters"]]


def test_copies_are_found_and_distinct_faces_are_not(hygiene_data):
    root, copies = hygiene_data
    r = audit(root).report
    expected = sorted(sorted([src, dst]) for dst, src in copies.items())
    # Every copy (exact, recompressed, resized, mirrored) with its original, and nothing else:
    # the distinct faces form no cluster.
    assert sorted(_clusters(r)) == expected
    assert r["exact"]["extra_copies"] == 1 and r["exact"]["groups"] == 1
    assert r["near"]["files"] == 2 * len(copies)
    assert r["images"] == 2 * PER_CLASS + len(copies)


def test_distinct_faces_have_no_near_duplicate_even_at_a_looser_distance(hygiene_data):
    root, copies = hygiene_data
    r = audit(root, distance=DEFAULT_DISTANCE + 2).report
    assert all(any(f["path"] in copies for f in c["files"]) for c in r["clusters"])


def test_conflicting_label_is_listed(hygiene_data):
    root, _ = hygiene_data
    r = audit(root).report
    assert len(r["conflicting_labels"]) == 1
    c = r["clusters"][r["conflicting_labels"][0]]
    assert c["classes"] == ["with_mask", "without_mask"]
    assert {f["path"] for f in c["files"]} == {"with_mask/with004.png", "without_mask/c_conflict.jpg"}


def test_cross_split_copies_are_listed(hygiene_data):
    root, copies = hygiene_data
    ds = scan_dataset(root, size=None)
    label = {it.path: ds.classes[it.label] for it in ds.items}
    # Originals in train, their copies in test, one copy in val; the distinct rest in val.
    val_copy = "with_mask/c_more005.jpg"
    test = [p for p in copies if p != val_copy]
    train = sorted(set(copies.values()))
    val = [p for p in label if p not in test and p not in train]
    split = {k: [[p, label[p]] for p in v] for k, v in (("train", train), ("val", val), ("test", test))}
    s = audit(root, split=split).report["split"]
    assert s["test_with_train_duplicate_files"] == sorted(test)
    assert s["test_with_train_duplicate_total"] == len(test)
    assert s["test_with_train_duplicate"] == {"with_mask": sum(label[p] == "with_mask" for p in test),
                                              "without_mask": sum(label[p] == "without_mask" for p in test)}
    assert s["clusters_straddling_by_pair"] == {"train-val": 1, "train-test": len(test), "val-test": 0}
    assert s["clusters_straddling"] == len(copies)


def test_split_switch_keeps_clusters_in_one_split_and_default_is_unchanged(hygiene_data):
    root, copies = hygiene_data
    ds = scan_dataset(root, size=16)
    clusters = near_duplicate_groups(ds, DEFAULT_DISTANCE)
    assert len(clusters) == len(copies)

    def straddling(split):
        where = {p: k for k in ("train", "val", "test") for p, _ in split[k]}
        return sum(len({where[p] for p in c}) > 1 for c in clusters)

    default = make_split(ds, seed=1337)
    assert straddling(default) > 0  # the switch has something to fix
    assert "near_duplicates" not in default  # a default split.json is what it was
    assert make_split(ds, seed=1337, near_duplicates=None) == default
    kept = make_split(ds, seed=1337, near_duplicates=DEFAULT_DISTANCE)
    assert straddling(kept) == 0 and kept["groups_straddling"] == 0
    assert kept["near_duplicates"] == DEFAULT_DISTANCE and kept["near_duplicate_clusters"] == len(copies)
    # Nothing dropped: every file is in exactly one split.
    files = sorted(p for k in ("train", "val", "test") for p, _ in kept[k])
    assert files == sorted(it.path for it in ds.items)
    assert kept["counts"]["test"] > 0


def test_cli_writes_report_sheet_and_summary(hygiene_data, tmp_path, capsys):
    root, copies = hygiene_data
    ds = scan_dataset(root, size=None)
    split = make_split(ds, seed=1337)
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.json").write_text(json.dumps(split))
    assert main(["data", "--data", str(root), "--split", str(run)]) == 0
    out, err = capsys.readouterr()
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("hygiene: ") and f"{len(copies)} near-duplicate clusters" in summary
    report = json.loads((run / "hygiene.json").read_text())
    assert report["split"]["counts"] == split["counts"]
    assert "# Data hygiene" in (run / "hygiene.md").read_text()
    with Image.open(run / "hygiene.png") as im:
        assert im.format == "PNG" and im.height > 100
    assert str(run / "hygiene.png") in out


@pytest.mark.parametrize("extra, message", [
    (["--distance", "99"], "near-duplicate distance 99 is out of range"),
    (["--split", "/no/such/run"], "/no/such/run not found"),
    (["--split", "GARBAGE"], "cannot read"),
    (["--split", "WRONG"], "is not a split"),
    (["--sheet", "-1", "--hygiene"], "--sheet -1 is negative"),
])
def test_bad_input_is_one_error_line(hygiene_data, tmp_path, capsys, extra, message):
    root, _ = hygiene_data
    garbage = tmp_path / "g" / "split.json"
    garbage.parent.mkdir()
    garbage.write_bytes(b"\xff\xfe not json")
    wrong = tmp_path / "w.json"
    wrong.write_text(json.dumps({"train": "nope"}))
    extra = [{"GARBAGE": str(garbage.parent), "WRONG": str(wrong)}.get(a, a) for a in extra]
    assert main(["data", "--data", str(root), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err, err
    assert "\n" not in err and "Traceback" not in err


def test_split_of_another_data_set_is_one_error_line(hygiene_data, tmp_path, capsys):
    root, _ = hygiene_data
    (tmp_path / "split.json").write_text(json.dumps(
        {"train": [["with_mask/elsewhere.png", "with_mask"]], "val": [], "test": []}))
    assert main(["data", "--data", str(root), "--split", str(tmp_path / "split.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not in" in err and "\n" not in err
