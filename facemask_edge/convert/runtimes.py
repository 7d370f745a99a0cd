"""Host int8 interpreters: the tflite-micro runtime (the boards' kernels) and TFLite's reference
kernels (``BUILTIN_REF``, which match TFLM bit for bit; the default XNNPACK delegate does not)."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from facemask_edge.errors import ConversionError

__all__ = ["TFLMRunner", "TFLiteRefRunner", "measure_arena", "parse_allocations"]


class _Runner:
    """One int8 input in, the int8 output row out; ``run_batch`` over many."""

    def run(self, x_int8: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def run_batch(self, xs: np.ndarray, progress=None) -> np.ndarray:
        out = []
        for x in xs:
            out.append(self.run(x))
            if progress is not None:
                progress.advance()
        width = int(np.prod(self.output["shape"]))
        return np.stack(out) if out else np.zeros((0, width), np.int8)


class TFLMRunner(_Runner):
    """Run an int8 model in the tflite-micro Python runtime (reference kernels)."""

    def __init__(self, model: bytes | str | Path, arena_size: int | None = None):
        from facemask_edge._tf import quiet_import

        # tflite_micro does not need TensorFlow (importing it here cost seconds on every board-sim,
        # validate and profile, and made them fail without TensorFlow); its native start-up
        # chatter is held back like TensorFlow's.
        with quiet_import():
            from tflite_micro.python.tflite_micro import runtime

        data = Path(model).read_bytes() if isinstance(model, (str, Path)) else bytes(model)
        self.model = data
        try:
            self.interp = runtime.Interpreter.from_bytes(data, arena_size=arena_size or
                                                         max(len(data) * 4, 1 << 20))
        except Exception as exc:
            raise ConversionError(f"tflite-micro cannot load the model: {exc}") from None
        self.input = self.interp.get_input_details(0)
        self.output = self.interp.get_output_details(0)

    def run(self, x_int8: np.ndarray) -> np.ndarray:
        """Invoke on one int8 input (with or without batch axis); return the int8 output row."""
        x = np.asarray(x_int8, dtype=np.int8).reshape(self.input["shape"])
        self.interp.set_input(x, 0)
        self.interp.invoke()
        return np.array(self.interp.get_output(0)).reshape(-1).copy()


class TFLiteRefRunner(_Runner):
    """Run an int8 model in TFLite with the reference op resolver (no XNNPACK)."""

    def __init__(self, model: bytes | str | Path):
        from facemask_edge._tf import tf

        import warnings

        T = tf()
        data = Path(model).read_bytes() if isinstance(model, (str, Path)) else bytes(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "tf.lite.Interpreter is deprecated" (LiteRT move)
            self.interp = T.lite.Interpreter(
                model_content=data,
                experimental_op_resolver_type=T.lite.experimental.OpResolverType.BUILTIN_REF)
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]

    def run(self, x_int8: np.ndarray) -> np.ndarray:
        x = np.asarray(x_int8, dtype=np.int8).reshape(self.input["shape"])
        self.interp.set_tensor(self.input["index"], x)
        self.interp.invoke()
        return self.interp.get_tensor(self.output["index"]).reshape(-1).copy()


_ALLOC_RE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def parse_allocations(text: str) -> dict[str, int]:
    """Parse TFLM's RecordingMicroAllocator report: ``{"total": .., "head": .., "tail": ..}``."""
    found = {m.group(1): int(m.group(2)) for m in _ALLOC_RE.finditer(text)}
    if "total" not in found:
        raise ConversionError("tflite-micro printed no arena record",
                              "check the tflite-micro package installation")
    return found


_ARENA_SCRIPT = """
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
data = open(sys.argv[1], "rb").read()
it = runtime.Interpreter.from_bytes(data, arena_size=int(sys.argv[2]))
d = it.get_input_details(0)
it.set_input(np.zeros(d["shape"], d["dtype"]), 0)
it.invoke()
sys.stderr.flush()
it.print_allocations()
"""


def measure_arena(model: bytes | str | Path, timeout: float = 120) -> dict[str, int]:
    """Tensor arena the model needs in TFLM, from the recording allocator (after one invoke).

    Runs in a child process: ``print_allocations()`` writes to the C-level stderr, and TFLM
    aborts the whole process on some degenerate models (e.g. an untrained softmax), which must
    become an error message here, not a crash.
    """
    import subprocess

    data = Path(model).read_bytes() if isinstance(model, (str, Path)) else bytes(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        arena = max(len(data) * 4, 1 << 21)
        while True:  # grow the arena until the model allocates (up to 256 MiB)
            proc = subprocess.run([sys.executable, "-c", _ARENA_SCRIPT, str(path), str(arena)],
                                  capture_output=True, text=True, timeout=timeout)
            if proc.returncode == 0 or "allocate" not in proc.stderr or arena >= 1 << 28:
                break
            arena *= 4
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise ConversionError(f"tflite-micro could not run the model (exit {proc.returncode}: "
                              f"{last[:200]})",
                              "a degenerate (untrained) model or an op TFLM lacks; see --verbose")
    return parse_allocations(proc.stderr)
