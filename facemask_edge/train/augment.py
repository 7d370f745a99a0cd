"""Training-time augmentation, on batches of ``pixel / 255`` images at the model's input size.

Two layers of it:

* :func:`augmenter`: geometry and photometry of any photo (flip, small rotation, zoom and shift,
  brightness, contrast): Keras preprocessing layers.
* :func:`camera_effects`: what the board's camera does to a face that the data set's photos do not
  show: a centre crop of a QCIF frame in which the face is framed differently (scale and offset
  jitter), auto white balance that is off (a colour cast), low light (gain and gamma), a soft lens
  (blur), sensor noise, RGB565's 5-6-5 bits, and a hand or scarf in front of part of the face.

Both only change training batches: the board's preprocessing (``facemask_edge.data.preprocess``,
bit-exact with ``firmware/common/fe_preprocess.c``) and every evaluation are untouched.
"""

from __future__ import annotations

__all__ = ["augmenter", "camera_effects", "CAMERA_EFFECTS"]

# Strengths of camera_effects, in one place.
CAMERA_EFFECTS = {
    "crop_scale": (0.80, 1.0),   # side of the random crop, of the image side (then resized back)
    "cast": 0.12,                # per-channel gain 1 +- this (white balance)
    "gain": (0.55, 1.15),        # exposure
    "gamma": (0.75, 1.35),
    "blur_p": 0.3,               # share of images through a 3x3 Gaussian
    "noise": 0.035,              # largest per-image sensor noise sigma (of full scale)
    "rgb565_p": 0.5,             # share of images quantised to 5-6-5 bits
    "occlude_p": 0.15,           # share of images with a rectangle over the upper face
    "occlude_side": (0.15, 0.35),
}


def augmenter(seed: int):
    """Flip, small rotation/zoom/shift, brightness and contrast, on [0, 1] images."""
    from facemask_edge._tf import keras

    L = keras().layers
    return keras().Sequential([
        L.RandomFlip("horizontal", seed=seed),
        L.RandomRotation(0.06, fill_mode="reflect", seed=seed + 1),
        L.RandomZoom((-0.12, 0.12), fill_mode="reflect", seed=seed + 2),
        L.RandomTranslation(0.06, 0.06, fill_mode="reflect", seed=seed + 3),
        L.RandomBrightness(0.15, value_range=(0.0, 1.0), seed=seed + 4),
        L.RandomContrast(0.2, seed=seed + 5),
    ], name="augment")


def camera_effects(x, seed: int, p: dict | None = None):
    """Camera-like degradations of a batch ``x`` (float32 ``(B, H, W, C)`` in [0, 1]).

    Each image draws its own strengths (see :data:`CAMERA_EFFECTS`); the result is clipped to
    [0, 1]. Random ops carry op seeds derived from ``seed``, so a seeded run repeats.
    """
    from facemask_edge._tf import tf

    T = tf()
    p = {**CAMERA_EFFECTS, **(p or {})}
    shape = T.shape(x)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]

    def u(lo, hi, s, dims=()):
        return T.random.uniform(T.concat([[b], T.constant(dims, T.int32)], 0) if dims else [b],
                                lo, hi, seed=seed + s)

    # Framing: a random square crop (scale and offset), resized back to the input size.
    side = u(*p["crop_scale"], 1)
    oy = u(0.0, 1.0, 2) * (1.0 - side)
    ox = u(0.0, 1.0, 3) * (1.0 - side)
    boxes = T.stack([oy, ox, oy + side, ox + side], axis=1)
    x = T.image.crop_and_resize(x, boxes, T.range(b), T.stack([h, w]), method="bilinear")

    # Exposure and white balance: gain, gamma, per-channel cast.
    x = x * T.reshape(u(*p["gain"], 4), [-1, 1, 1, 1])
    x = T.clip_by_value(x, 0.0, 1.0) ** T.reshape(u(*p["gamma"], 5), [-1, 1, 1, 1])
    if x.shape[-1] == 3:
        x = x * T.reshape(u(1.0 - p["cast"], 1.0 + p["cast"], 6, (3,)), [-1, 1, 1, 3])

    # A soft lens: a 3x3 Gaussian on some images.
    k1 = T.constant([0.25, 0.5, 0.25])
    k2 = T.tile(T.reshape(k1[:, None] * k1[None, :], [3, 3, 1, 1]), [1, 1, c, 1])
    blurred = T.nn.depthwise_conv2d(T.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC"),
                                    k2, [1, 1, 1, 1], "VALID")
    pick = T.reshape(T.cast(u(0.0, 1.0, 7) < p["blur_p"], T.float32), [-1, 1, 1, 1])
    x = pick * blurred + (1.0 - pick) * x

    # Sensor noise, its sigma drawn per image.
    sigma = T.reshape(u(0.0, p["noise"], 8), [-1, 1, 1, 1])
    x = x + sigma * T.random.normal(shape, seed=seed + 9)
    x = T.clip_by_value(x, 0.0, 1.0)

    # RGB565: 5 bits of red and blue, 6 of green, expanded by bit replication as on the board.
    if x.shape[-1] == 3:
        v = T.round(x * 255.0)
        bits = T.constant([5.0, 6.0, 5.0])
        top = T.floor(v / 2.0 ** (8.0 - bits))
        q = (top * 2.0 ** (8.0 - bits) + T.floor(top / 2.0 ** (2.0 * bits - 8.0))) / 255.0
        pick = T.reshape(T.cast(u(0.0, 1.0, 10) < p["rgb565_p"], T.float32), [-1, 1, 1, 1])
        x = pick * q + (1.0 - pick) * x

    # Occlusion: a flat rectangle of a random colour over part of the face on some images.
    hs = u(*p["occlude_side"], 11)
    ws = u(*p["occlude_side"], 12)
    # Centred in the top 40 % (hair, hand at the forehead, glasses): a patch over the mouth would
    # look like a mask on a bare face, a label the image no longer shows.
    cy, cx = u(0.0, 0.4, 13), u(0.0, 1.0, 14)
    yy = T.reshape((T.cast(T.range(h), T.float32) + 0.5) / T.cast(h, T.float32), [1, -1, 1, 1])
    xx = T.reshape((T.cast(T.range(w), T.float32) + 0.5) / T.cast(w, T.float32), [1, 1, -1, 1])
    r = lambda v: T.reshape(v, [-1, 1, 1, 1])  # noqa: E731
    inside = T.cast((T.abs(yy - r(cy)) < r(hs) / 2) & (T.abs(xx - r(cx)) < r(ws) / 2), T.float32)
    inside = inside * r(T.cast(u(0.0, 1.0, 15) < p["occlude_p"], T.float32))
    colour = T.random.uniform(T.stack([b, 1, 1, c]), seed=seed + 16)
    x = inside * colour + (1.0 - inside) * x
    return T.clip_by_value(x, 0.0, 1.0)
