"""A tiny converted run for device tests and demos: synthetic images, a small int8 model.

``make_tiny_run(dir)`` writes what ``convert`` would leave in a run folder (model_int8.tflite,
model_card.json, config.json, labels.txt, split.json) in a few seconds, without training: the
weights are random but fixed, which is all the protocol and the board/host comparison need.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

__all__ = ["make_tiny_model", "make_tiny_run", "write_images", "CLASSES"]


_MODELS: dict = {}


def make_tiny_model(size: int = 24, channels: int = 3, classes: int = 2, seed: int = 0,
                    head: str = "mean") -> bytes:
    """A full-int8 TFLite model: conv, depthwise conv, pointwise conv, a head, dense, softmax.

    Input int8 ``(1, size, size, channels)`` with scale 1/255 and zero point -128 (pixels in
    [0, 1] in the representative set), output int8 ``(1, classes)``. Converted once per process
    for each set of arguments.

    Args:
        head: ``"mean"`` (global average pooling, a MEAN op) or ``"flatten"`` (RESHAPE, then the
            dense layer; no pooling, no softmax). Under the emulated Cortex-M4, TFLM 2.0.0 with
            CMSIS-NN (the boards' library) and the host's tflite-micro differ by up to 6 LSB on
            MEAN, on AVERAGE_POOL_2D by 1 LSB over 3x3 and up to 12 over 12x12, and by 1 LSB now
            and then on SOFTMAX and the convolutions with these random weights; the
            ``"flatten"`` head keeps the difference to at most 1 LSB.
    """
    if head not in ("mean", "flatten"):
        raise ValueError(f"head must be 'mean' or 'flatten', not {head!r}")
    key = (size, channels, classes, seed, head)
    if key not in _MODELS:
        _MODELS[key] = _convert_tiny(size, channels, classes, seed, head)
    return _MODELS[key]


def _convert_tiny(size: int, channels: int, classes: int, seed: int, head: str) -> bytes:
    from facemask_edge._tf import keras, tf

    tf_, k = tf(), keras()
    tf_.random.set_seed(seed)
    inp = k.Input((size, size, channels))
    x = k.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = k.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = k.layers.Conv2D(8, 1, activation="relu")(x)
    if head == "mean":
        out = k.layers.Dense(classes, activation="softmax")(k.layers.GlobalAveragePooling2D()(x))
    else:
        out = k.layers.Dense(classes)(k.layers.Flatten()(x))
    model = k.Model(inp, out)
    rng = np.random.RandomState(seed)

    def representative():
        for _ in range(16):
            yield [rng.uniform(0, 1, (1, size, size, channels)).astype(np.float32)]

    from facemask_edge.convert.converter import convert_keras

    return convert_keras(model, representative)


CLASSES = ("with_mask", "without_mask")


def write_images(root: str | Path, per_class: int = 12, seed: int = 0,
                 classes: tuple[str, ...] = CLASSES, prefix: str = "") -> Path:
    """Random images of varied sizes and formats in ``root/<class>/`` (no meaning needed here:
    the board and the host only have to agree). ``prefix`` starts every file name (e.g.
    ``"mfn_"`` for a source prefix, then the class and number)."""
    from PIL import Image

    root = Path(root)
    rng = np.random.RandomState(seed)
    for ci, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = int(rng.randint(30, 90)), int(rng.randint(30, 90))
            base = rng.randint(0, 256, 3) if ci == 0 else rng.randint(0, 80, 3)
            img = np.clip(base + rng.randint(-60, 60, (h, w, 3)), 0, 255).astype(np.uint8)
            ext = (".png", ".jpg", ".bmp")[i % 3]
            name = f"{prefix}{ci}{i:03d}{ext}" if prefix else f"{cls}_{i:03d}{ext}"
            Image.fromarray(img).save(root / cls / name)
    return root


def _io_details(model: bytes) -> tuple[dict, dict]:
    """Input and output shape and quantization, read from the flatbuffer (no TensorFlow: the
    tests that build runs from the checked-in models in tests/fixtures run without it)."""
    from facemask_edge.artifacts.tflite import read_tflite

    info = read_tflite(model)
    i, o = info.inputs[0], info.outputs[0]
    return ({"shape": list(i.shape), "quantization": (i.scale, i.zero_point)},
            {"shape": list(o.shape), "quantization": (o.scale, o.zero_point)})


def make_tiny_run(run_dir: str | Path, data_dir: str | Path | None = None, size: int = 24,
                  color: str = "rgb", per_class: int = 12, seed: int = 0,
                  model: bytes | None = None, classes: tuple[str, ...] = CLASSES) -> Path:
    """Write a converted run folder with a tiny model and a synthetic data set.

    Args:
        run_dir: the run folder to create.
        data_dir: where the synthetic images go (default ``run_dir/../data``).
        size, color: model input.
        per_class: synthetic images per class.
        model: reuse an already converted model (must match size/color/classes).
        classes: class folders (the model's labels are their sorted names).

    Returns:
        ``run_dir``.
    """
    from facemask_edge.data.ingest import scan_dataset
    from facemask_edge.data.splits import make_split, save_split
    from facemask_edge.artifacts.files import write_json

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir) if data_dir else run_dir.parent / "data"
    if not data_dir.exists():
        write_images(data_dir, per_class=per_class, seed=seed, classes=classes)
    labels = sorted(classes)
    channels = 1 if color == "grayscale" else 3
    model = model or make_tiny_model(size, channels, len(labels), seed)
    (run_dir / "model_int8.tflite").write_bytes(model)
    i, o = _io_details(model)
    card = {
        "schema": 1, "model": "model_int8.tflite",
        "sha256": hashlib.sha256(model).hexdigest(), "flatbuffer_bytes": len(model),
        "quantization": "ptq",
        "input": {"shape": [int(v) for v in i["shape"]], "dtype": "int8",
                  "scale": float(i["quantization"][0]), "zero_point": int(i["quantization"][1]),
                  "size": size, "color": color},
        "output": {"shape": [int(v) for v in o["shape"]], "dtype": "int8",
                   "scale": float(o["quantization"][0]), "zero_point": int(o["quantization"][1])},
        "labels": labels, "arena_bytes": 16 * 1024, "run": run_dir.name,
    }
    write_json(run_dir / "model_card.json", card)
    (run_dir / "labels.txt").write_text("".join(c + "\n" for c in labels))
    write_json(run_dir / "config.json", {"data": str(data_dir), "size": size, "color": color, "arch": "tiny-test"})
    ds = scan_dataset(data_dir, size=size, color=color, use_cache=False)
    save_split(make_split(ds, seed=seed, fractions=(0.5, 0.1, 0.4)), run_dir)
    from facemask_edge.artifacts.run import SHIPPED, Run

    # Recorded like convert records its output (the model comes from the toolkit's converter),
    # so loading it needs no child-process probe.
    Run(run_dir).record(SHIPPED, {})
    return run_dir
