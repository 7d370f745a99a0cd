"""Synthetic face-mask images for tests and the demo: no data set or network needed.

Each image is a drawn face (skin-toned ellipse, eyes) on a random background; ``with_mask``
faces wear a coloured mask over the lower half. Colours, positions and sizes vary with the seed,
so a small model has something real to learn, and the files come in several formats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["draw_face", "make_synthetic_dataset", "make_tiny_backbone", "CLASSES"]

CLASSES = ("with_mask", "without_mask")


def draw_face(rng: np.random.RandomState, masked: bool, size: int = 64) -> Image.Image:
    """Draw one synthetic face, ``size`` x ``size`` RGB."""
    bg = tuple(int(v) for v in rng.randint(0, 256, 3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    cx, cy = size / 2 + rng.uniform(-0.08, 0.08) * size, size / 2 + rng.uniform(-0.08, 0.08) * size
    rw, rh = rng.uniform(0.28, 0.36) * size, rng.uniform(0.36, 0.44) * size
    skin = tuple(int(v) for v in (rng.randint(120, 240), rng.randint(80, 190), rng.randint(60, 160)))
    d.ellipse([cx - rw, cy - rh, cx + rw, cy + rh], fill=skin)
    for ex in (-0.4, 0.4):
        d.ellipse([cx + ex * rw - 0.1 * rw, cy - 0.3 * rh - 0.07 * rh,
                   cx + ex * rw + 0.1 * rw, cy - 0.3 * rh + 0.07 * rh], fill=(20, 20, 30))
    if masked:
        palette = [(230, 235, 240), (60, 120, 220), (30, 30, 35), (120, 200, 230), (200, 80, 90)]
        mask = palette[rng.randint(len(palette))]
        d.rectangle([cx - rw * 0.95, cy + 0.05 * rh, cx + rw * 0.95, cy + 0.8 * rh], fill=mask)
        d.line([cx - rw, cy + 0.1 * rh, cx - rw * 1.3, cy - 0.2 * rh], fill=mask, width=2)
        d.line([cx + rw, cy + 0.1 * rh, cx + rw * 1.3, cy - 0.2 * rh], fill=mask, width=2)
    else:
        d.ellipse([cx - 0.35 * rw, cy + 0.35 * rh, cx + 0.35 * rw, cy + 0.55 * rh], fill=(150, 40, 50))
        d.line([cx, cy - 0.1 * rh, cx, cy + 0.15 * rh], fill=tuple(max(0, c - 40) for c in skin), width=2)
    return img


def make_synthetic_dataset(root: str | Path, per_class: int = 24, size: int = 64,
                           seed: int = 0) -> Path:
    """Write ``root/with_mask`` and ``root/without_mask`` with ``per_class`` images each.

    Formats rotate through JPEG, PNG, WEBP and BMP so ingest sees a mix. Returns ``root``.
    """
    root = Path(root)
    rng = np.random.RandomState(seed)
    formats = [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("BMP", ".bmp")]
    for cls in CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = draw_face(rng, cls == "with_mask", size)
            fmt, ext = formats[i % len(formats)]
            kwargs = {"quality": 92} if fmt in ("JPEG", "WEBP") else {}
            img.save(root / cls / f"{cls}_{i:04d}{ext}", fmt, **kwargs)
    return root


def make_tiny_backbone(path: str | Path, size: int = 32, seed: int = 0) -> Path:
    """Save a tiny MobileNet-style Keras model (conv, depthwise-separable blocks, BN, ReLU,
    pooling, 2-class head) to ``path`` for ``train --weights PATH`` in tests and the demo.

    It is randomly initialised: what it stands in for is the shape of a real backbone file
    (like vww_96.h5) at a size that trains and converts in seconds.
    """
    from facemask_edge._tf import keras, seed_everything

    k = keras()
    seed_everything(seed)  # unseeded initialisers draw from Python's random, not TF's seed
    L = k.layers
    inp = k.Input((size, size, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization(momentum=0.5)(x)
    x = L.ReLU(6.0)(x)
    for filters, stride in ((16, 1), (24, 2), (32, 2)):
        x = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = L.BatchNormalization(momentum=0.5)(x)
        x = L.ReLU(6.0)(x)
        x = L.Conv2D(filters, 1, use_bias=False)(x)
        x = L.BatchNormalization(momentum=0.5)(x)
        x = L.ReLU(6.0)(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(2, activation="softmax")(x)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k.Model(inp, out, name="tiny_backbone").save(path)
    return path
