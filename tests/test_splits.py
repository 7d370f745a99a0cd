"""Splits: deterministic, stratified, duplicates kept together, seed-notebook scheme."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facemask_edge.data.ingest import scan_dataset
from facemask_edge.data.splits import NOTEBOOK_EXTENSIONS, load_split, make_split, save_split, split_indices
from facemask_edge.errors import DataError
from facemask_edge.testing import make_synthetic_dataset


@pytest.fixture(scope="module")
def dup_data(tmp_path_factory):
    root = make_synthetic_dataset(tmp_path_factory.mktemp("s") / "d", per_class=40, size=32)
    # 10 byte-identical copies and 5 re-encoded copies with identical pixels (PNG -> BMP)
    from PIL import Image

    for i, f in enumerate(sorted((root / "with_mask").glob("*.png"))[:5]):
        for j in range(2):
            shutil.copy(f, root / "with_mask" / f"copy_{i}_{j}.png")
        Image.open(f).save(root / "with_mask" / f"reenc_{i}.bmp")
    return scan_dataset(root, size=16, use_cache=False)


def test_split_is_deterministic_and_depends_on_seed(dup_data):
    a, b = make_split(dup_data, seed=3), make_split(dup_data, seed=3)
    assert a == b
    assert make_split(dup_data, seed=4)["test"] != a["test"]


def test_split_is_stratified_and_complete(dup_data):
    s = make_split(dup_data, seed=1)
    names = [p for part in ("train", "val", "test") for p, _ in s[part]]
    assert sorted(names) == sorted(it.path for it in dup_data.items)  # every file once
    for part, frac in (("val", 0.15), ("test", 0.15)):
        labels = [c for _, c in s[part]]
        for c, n in dup_data.counts().items():
            assert abs(labels.count(c) - n * frac) <= 4  # whole duplicate groups move together


def test_duplicates_never_straddle_splits(dup_data):
    s = make_split(dup_data, seed=11)
    sha = {it.path: it.sha for it in dup_data.items}
    where = {}
    for part in ("train", "val", "test"):
        for p, _ in s[part]:
            where.setdefault(sha[p], set()).add(part)
    groups = [v for v in where.values()]
    assert all(len(v) == 1 for v in groups)
    assert s["duplicate_groups_straddling"] == 0
    assert len(dup_data.items) - dup_data.duplicate_groups() == 15  # 3 extra copies x 5


def test_split_roundtrip_and_missing_files(dup_data, tmp_path):
    s = make_split(dup_data, seed=2)
    save_split(s, tmp_path)
    loaded = load_split(tmp_path)
    idx = split_indices(dup_data, loaded)
    assert sum(len(v) for v in idx.values()) == len(dup_data.items)
    loaded["test"].append(["with_mask/gone.png", "with_mask"])
    with pytest.raises(DataError, match="not in"):
        split_indices(dup_data, loaded)


def test_seed_notebook_scheme(dup_data):
    s = make_split(dup_data, scheme="seed-notebook", seed=123)
    # image_dataset_from_directory only reads these extensions (the .webp files are left out)
    n = sum(Path(it.path).suffix in NOTEBOOK_EXTENSIONS for it in dup_data.items)
    assert n < len(dup_data.items)
    n_val = int(0.2 * n)
    assert s["counts"]["train"] == n - n_val
    assert s["counts"]["test"] == (-(-n_val // 32) // 5) * 32
    assert s["counts"]["val"] + s["counts"]["test"] == n_val
    assert s == make_split(dup_data, scheme="seed-notebook", seed=123)


def test_bad_scheme_and_fractions(dup_data):
    with pytest.raises(DataError, match="unknown split"):
        make_split(dup_data, scheme="random")
    with pytest.raises(DataError, match="add up to 1"):
        make_split(dup_data, fractions=(0.5, 0.2, 0.2))
