"""benchmarks/error_overlap.py: per-image error counts across runs of one split, and the ensemble."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("error_overlap", ROOT / "benchmarks" / "error_overlap.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Four test images (two per class); what each run's board answered, as int8 output scores.
KEYS = [("with_mask/a.png", 0), ("with_mask/b.png", 0), ("without_mask/c.png", 1), ("without_mask/d.png", 1)]
BOARD = {
    "r1": [[100, -100], [-50, 50], [-90, 90], [80, -80]],  # b and d wrong
    "r2": [[90, -90], [-60, 60], [-70, 70], [-10, 10]],  # b wrong
    "r3": [[-20, 20], [70, -70], [-80, 80], [30, -30]],  # a and d wrong
}


def _run(root: Path, name: str, split: dict, data: Path) -> Path:
    run = root / name
    (run / "validate-sim").mkdir(parents=True)
    (run / "split.json").write_text(json.dumps(split))
    lines = [{"kind": "header", "source": "test split", "n": len(KEYS), "classes": ["with_mask", "without_mask"],
              "data_root": str(data)}]
    for i, ((key, label), scores) in enumerate(zip(KEYS, BOARD[name])):
        answer = {"label": int(scores[1] > scores[0]), "scores": scores}
        lines.append({"kind": "image", "i": i, "key": key, "label": label, "board": {**answer, "us": 10},
                      "host": answer})
    (run / "validate-sim" / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


def test_counts_each_run_once_per_wrong_image_of_either_class(tmp_path, capsys):
    data = tmp_path / "data"
    for key, _ in KEYS:
        (data / key).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), "gray").save(data / key)
    split = {"train": [], "val": [], "test": [[k, k.split("/")[0]] for k, _ in KEYS]}
    runs = [_run(tmp_path / "runs", n, split, data) for n in BOARD]
    out = tmp_path / "overlap"
    assert _script().main([*map(str, runs), "--out", str(out)]) == 0
    md = out.with_suffix(".md").read_text()
    assert "| `with_mask/b.png` | with_mask | 2/3 |" in md  # a with_mask error counts (label 0)
    assert "| `without_mask/d.png` | without_mask | 2/3 |" in md
    assert "| `with_mask/a.png` | with_mask | 1/3 |" in md
    assert "without_mask/c.png" not in md  # right in every run
    assert "wrong in more than half the runs: 2" in md and "wrong in at least one run: 3" in md
    # Ensemble: summed scores a (170, -170) right, b (-40, 40) wrong, c right, d (100, -100) wrong.
    assert "2 wrong, accuracy 0.5000" in md
    assert Image.open(out.with_suffix(".png")).size[0] > 0


def test_runs_of_different_splits_are_refused(tmp_path):
    data = tmp_path / "data"
    split = {"train": [], "val": [], "test": [[k, k.split("/")[0]] for k, _ in KEYS]}
    a = _run(tmp_path / "runs", "r1", split, data)
    b = _run(tmp_path / "runs", "r2", dict(split, val=[["with_mask/x.png", "with_mask"]]), data)
    with pytest.raises(SystemExit, match="different splits"):
        _script().main([str(a), str(b), "--out", str(tmp_path / "o")])
