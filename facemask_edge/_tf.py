"""Import TensorFlow with Keras 2 (tf_keras), lazily and quietly.

tensorflow-model-optimization's QAT does not support Keras 3, so ``TF_USE_LEGACY_KERAS=1`` must
be set before TensorFlow is imported for the first time. Every module gets TensorFlow from here.
TensorFlow 2.21's C++ start-up notices (oneDNN, CUDA probing) ignore ``TF_CPP_MIN_LOG_LEVEL``;
they are held back during the import and shown only if it fails (or with
``FACEMASK_EDGE_TF_LOGS=1``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

__all__ = ["tf", "keras", "quiet_import", "quiet_native"]

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def quiet_native():
    """Hold C-level stderr (fd 2) during the block; replay it if the block raises.

    For TensorFlow's native chatter (start-up notices, the converter's ``fully_quantize: 0 ...``
    line) that Python's logging and warnings filters cannot reach. ``FACEMASK_EDGE_TF_LOGS=1``
    lets everything through.
    """
    if os.environ.get("FACEMASK_EDGE_TF_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not ok:
                tmp.seek(0)
                sys.stderr.write(tmp.read().decode(errors="replace"))


@contextlib.contextmanager
def quiet_import():
    """Hold C-level stderr while heavy native modules import; replay it if the import fails."""
    if "tensorflow" in sys.modules:
        yield
        return
    with quiet_native():
        yield


def tf():
    """Return the ``tensorflow`` module (imported on first use)."""
    with quiet_import():
        import tensorflow
    return tensorflow


def keras():
    """Return the ``tf_keras`` module (Keras 2)."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    with quiet_import():
        import tensorflow  # noqa: F401
        import tf_keras
    return tf_keras
