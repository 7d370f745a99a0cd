"""The host's int8 reference: the same model in tflite-micro, or TFLite's reference kernels."""

from __future__ import annotations

import numpy as np

from facemask_edge.errors import ModelError

__all__ = ["HostReference", "REFERENCES"]

REFERENCES = ("tflm", "tflite")


class HostReference:
    """Run the int8 model on the host.

    Args:
        model: ``.tflite`` bytes.
        kind: ``"tflm"`` (the tflite-micro interpreter, what the firmware links) or ``"tflite"``
            (TFLite with ``BUILTIN_REF`` kernels, which match TFLM bit for bit; the default
            XNNPACK kernels do not).
    """

    def __init__(self, model: bytes, kind: str = "tflm"):
        if kind not in REFERENCES:
            raise ModelError(f"unknown reference {kind!r}", f"use one of {', '.join(REFERENCES)}")
        self.kind = kind
        if kind == "tflm":
            from tflite_micro.python.tflite_micro import runtime

            try:
                self._it = runtime.Interpreter.from_bytes(model, arena_size=max(16 * len(model), 4 << 20))
            except RuntimeError as exc:
                raise ModelError(f"tflite-micro cannot load the model: {str(exc).splitlines()[0]}",
                                 "re-run facemask-edge convert") from None
            d = self._it.get_input_details(0)
            self.shape = tuple(int(v) for v in d["shape"])
        else:
            from facemask_edge._tf import tf

            tf_ = tf()
            self._it = tf_.lite.Interpreter(
                model_content=model,
                experimental_op_resolver_type=tf_.lite.experimental.OpResolverType.BUILTIN_REF)
            self._it.allocate_tensors()
            self._in = self._it.get_input_details()[0]
            self._out = self._it.get_output_details()[0]
            self.shape = tuple(int(v) for v in self._in["shape"])

    def scores(self, data: bytes) -> list[int]:
        """Raw int8 outputs for one int8 input (``H*W*C`` bytes)."""
        x = np.frombuffer(data, dtype=np.int8).reshape(self.shape)
        if self.kind == "tflm":
            self._it.set_input(x, 0)
            self._it.invoke()
            out = self._it.get_output(0)
        else:
            self._it.set_tensor(self._in["index"], x)
            self._it.invoke()
            out = self._it.get_tensor(self._out["index"])
        return [int(v) for v in np.asarray(out).reshape(-1)]
