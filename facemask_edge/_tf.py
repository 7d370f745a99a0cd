"""Import TensorFlow with Keras 2 (tf_keras), lazily and quietly; seed it for reproducible runs.

tensorflow-model-optimization's QAT does not support Keras 3, so ``TF_USE_LEGACY_KERAS=1`` must
be set before TensorFlow is imported for the first time. Every module gets TensorFlow from here.

Quiet: TensorFlow and its companions talk on two channels. Native code (oneDNN and CUDA probing
at start-up, the converter, absl) writes to file descriptor 2 and ignores
``TF_CPP_MIN_LOG_LEVEL``; it is held back during the import, the first device probe and the
conversion (:func:`quiet_native`) and replayed only if they fail. Python code (tf_keras' "HDF5 is
legacy" and "Compiled the loaded model" notices, h5py, absl logging) goes through ``warnings``
and ``logging``, which are filtered once TensorFlow is imported. ``facemask-edge --verbose`` (or
``FACEMASK_EDGE_TF_LOGS=1``) shows everything.

Reproducible: :func:`seed_everything` seeds Python, numpy and TensorFlow and turns on
TensorFlow's op determinism, so one seed on one machine gives one model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings

__all__ = ["tf", "keras", "quiet_import", "quiet_native", "show_library_logs", "library_logs_shown",
           "seed_everything", "library_versions"]

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Python packages whose warnings and log records are library chatter, not the toolkit's.
_CHATTY = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "h5py", "absl",
           "tflite_micro")
_terminal = None  # Python's own handle on the user's stderr, once fd 2 can be held (see below)
_python_quiet = False


def show_library_logs() -> None:
    """Let TensorFlow's native and Python log lines through (``--verbose``).

    Call it before TensorFlow is imported: ``TF_CPP_MIN_LOG_LEVEL`` is read then.
    """
    os.environ["FACEMASK_EDGE_TF_LOGS"] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


def library_logs_shown() -> bool:
    """True under ``--verbose`` / ``FACEMASK_EDGE_TF_LOGS=1``."""
    return bool(os.environ.get("FACEMASK_EDGE_TF_LOGS"))


def _python_stderr_off_fd2() -> None:
    """Give Python's ``sys.stderr`` its own descriptor (a duplicate of fd 2).

    Holding fd 2 must hide native chatter only: the toolkit's own lines and progress bars, written
    while a conversion runs, still reach the terminal. Done once, and only when ``sys.stderr`` is
    the process's real stderr (not a test's capture object).
    """
    global _terminal
    if _terminal is not None or sys.stderr is None or sys.stderr is not sys.__stderr__:
        return
    try:
        if sys.stderr.fileno() != 2:
            return
    except (AttributeError, OSError, ValueError):
        return
    sys.stderr.flush()
    _terminal = io.TextIOWrapper(io.FileIO(os.dup(2), "w"), encoding=sys.stderr.encoding,
                                 errors=sys.stderr.errors, line_buffering=True, write_through=True)
    sys.stderr = _terminal
    # A native crash (SIGSEGV, abort) while fd 2 is held would otherwise die in silence.
    import faulthandler

    faulthandler.enable(file=_terminal)


@contextlib.contextmanager
def quiet_native(replay=None):
    """Hold C-level stderr (fd 2) during the block; replay it if the block fails.

    For TensorFlow's native chatter (start-up notices, ``cuInit`` errors, tf.data graph
    warnings, the converter's ``fully_quantize: 0 ...`` line, absl) that Python's logging and
    warnings filters cannot reach. Python-level output (``sys.stderr``) still reaches the
    terminal. ``FACEMASK_EDGE_TF_LOGS=1`` lets everything through.

    Args:
        replay: called with the exception that ends the block; the held output is shown when it
            returns True. Default: for every exception but ``KeyboardInterrupt``.
    """
    if library_logs_shown():
        yield
        return
    _python_stderr_off_fd2()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        failure: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failure is not None and (replay(failure) if replay else
                                        not isinstance(failure, KeyboardInterrupt)):
                tmp.seek(0)
                held = tmp.read().decode(errors="replace")
                if held:
                    sys.stderr.write(held if held.endswith("\n") else held + "\n")


@contextlib.contextmanager
def quiet_import():
    """Hold C-level stderr while heavy native modules import; replay it if the import fails."""
    if "tensorflow" in sys.modules:
        yield
        return
    with quiet_native():
        yield


def _quiet_python() -> None:
    """Filter the Python-level chatter of TensorFlow and friends (once, unless ``--verbose``)."""
    global _python_quiet
    if _python_quiet or library_logs_shown():
        return
    _python_quiet = True
    pattern = r"(" + "|".join(_CHATTY) + r")(\.|$)"
    warnings.filterwarnings("ignore", module=pattern)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.ERROR)
    absl = sys.modules.get("absl.logging")
    if absl is not None:
        absl.set_verbosity(absl.ERROR)


def tf():
    """Return the ``tensorflow`` module (imported on first use)."""
    first = "tensorflow" not in sys.modules
    with quiet_import():
        import tensorflow

        if first:
            # CUDA is probed on the first device lookup, not at import: probe now, while fd 2 is
            # held, or its "failed call to cuInit" line lands in the middle of training.
            tensorflow.config.list_physical_devices()
    _quiet_python()
    return tensorflow


def keras():
    """Return the ``tf_keras`` module (Keras 2)."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    tf()
    with quiet_import():
        import tf_keras
    _quiet_python()
    return tf_keras


def seed_everything(seed: int) -> dict:
    """Make what follows reproducible: seed every random source and make TensorFlow's ops
    deterministic.

    Seeds Python's ``random``, numpy's global generator and TensorFlow's global seed (weight
    initialisation, dropout, augmentation layers and ``tf.data`` shuffles draw their op seeds
    from it, in the order they are created), and enables
    ``tf.config.experimental.enable_op_determinism`` (deterministic kernels and ``tf.data``
    element order; random ops in a parallel ``map`` then run in order). Called at the start of
    training, QAT and conversion, so each stage starts from the same state whatever ran before
    it in the process.

    Returns:
        What was set, for the run's record: ``{"seed", "op_determinism"}``.
    """
    T = tf()
    keras().utils.set_random_seed(int(seed))
    T.config.experimental.enable_op_determinism()
    return {"seed": int(seed), "op_determinism": True}


def library_versions() -> dict[str, str]:
    """Versions of the packages that decide what a run produces (recorded in every run)."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("facemask-edge", "tensorflow", "tf_keras", "tensorflow-model-optimization",
                "tflite-micro", "numpy", "Pillow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out
