"""Import TensorFlow with Keras 2 (tf_keras), lazily.

tensorflow-model-optimization's QAT does not support Keras 3, so ``TF_USE_LEGACY_KERAS=1`` must
be set before TensorFlow is imported for the first time. Every module gets TensorFlow from here.
"""

from __future__ import annotations

import os

__all__ = ["tf", "keras"]

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tf():
    """Return the ``tensorflow`` module (imported on first use)."""
    import tensorflow

    return tensorflow


def keras():
    """Return the ``tf_keras`` module (Keras 2)."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras

    return tf_keras
