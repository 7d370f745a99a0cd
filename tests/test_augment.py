"""Camera-realistic augmentation: what each effect does to a batch, measured on the tensors."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

OFF = {"crop_scale": (1.0, 1.0), "cast": 0.0, "gain": (1.0, 1.0), "gamma": (1.0, 1.0), "blur_p": 0.0,
       "noise": 0.0, "rgb565_p": 0.0, "occlude_p": 0.0}


def _batch(n=16, size=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3)).astype(np.float32) / 255.0


def _run(x, seed=1, **p):
    from facemask_edge.train.augment import camera_effects

    return camera_effects(x, seed, {**OFF, **p}).numpy()


def test_all_off_is_the_identity():
    x = _batch()
    assert np.allclose(_run(x), x, atol=1e-6)


def test_defaults_change_images_stay_in_range_and_repeat_with_the_seed():
    from facemask_edge.train.augment import camera_effects

    x = _batch()
    a = camera_effects(x, 5).numpy()
    assert a.shape == x.shape and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert np.abs(a - x).mean() > 0.02
    # a fresh graph with the same op seeds gives the same batch (seeded runs repeat)
    import tensorflow as tf

    tf.random.set_seed(3)
    b1 = camera_effects(x, 5).numpy()
    tf.random.set_seed(3)
    b2 = camera_effects(x, 5).numpy()
    assert np.array_equal(b1, b2)


def test_rgb565_gives_the_boards_bit_replicated_values():
    from facemask_edge.data.preprocess import rgb565_to_rgb888, rgb888_to_rgb565

    x = _batch(4, 16)
    q = np.round(_run(x, rgb565_p=1.0) * 255).astype(np.uint8)
    u8 = np.round(x * 255).astype(np.uint8)
    for img_q, img in zip(q, u8):
        want = rgb565_to_rgb888(rgb888_to_rgb565(img), 16, 16)
        assert np.array_equal(img_q, want)


def test_cast_scales_each_channel_by_one_gain_per_image():
    x = np.full((8, 8, 8, 3), 0.5, np.float32)
    y = _run(x, cast=0.12)
    gains = y[:, 0, 0, :] / 0.5
    assert np.allclose(y, y[:, :1, :1, :], atol=1e-6)  # flat stays flat
    assert gains.min() >= 0.88 - 1e-5 and gains.max() <= 1.12 + 1e-5
    assert np.ptp(gains, axis=1).max() > 0.01  # channels differ: a colour cast, not a gain


def test_noise_and_blur_move_pixel_statistics_the_right_way():
    x = _batch(32, 24)
    noisy = _run(x[:, :, :, :] * 0 + 0.5, noise=0.05)
    assert 0.005 < noisy.std() < 0.05
    blurred = _run(x, blur_p=1.0)
    # a 3x3 Gaussian removes high frequencies: neighbour differences shrink
    d = lambda a: np.abs(np.diff(a, axis=2)).mean()  # noqa: E731
    assert d(blurred) < 0.6 * d(x)
    assert abs(blurred.mean() - x.mean()) < 0.01


def test_occlusion_stays_in_the_upper_face_and_leaves_the_mouth_alone():
    x = np.full((64, 20, 20, 3), 0.5, np.float32)
    y = _run(x, occlude_p=1.0)
    changed = np.abs(y - x).max(axis=-1) > 1e-6
    assert changed.any(axis=(1, 2)).mean() > 0.9
    rows = np.nonzero(changed.any(axis=(0, 2)))[0]
    assert rows.max() < 20 * (0.4 + 0.35 / 2) + 1  # nothing below about 57 % of the height


def test_crop_jitter_zooms_in():
    # a centred white square on black grows when a smaller crop is resized back up
    x = np.zeros((8, 32, 32, 3), np.float32)
    x[:, 12:20, 12:20] = 1.0
    y = _run(x, crop_scale=(0.5, 0.5))
    assert (y > 0.5).sum() > 2 * (x > 0.5).sum()
