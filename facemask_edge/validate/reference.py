"""The host's int8 reference: the same model in tflite-micro, or TFLite's reference kernels."""

from __future__ import annotations

import numpy as np

from facemask_edge.errors import ConversionError, ModelError

__all__ = ["HostReference", "REFERENCES"]

REFERENCES = ("tflm", "tflite")


class HostReference:
    """Run the int8 model on the host, one raw input at a time.

    Args:
        model: ``.tflite`` bytes.
        kind: ``"tflm"`` (the tflite-micro interpreter, what the firmware links) or ``"tflite"``
            (TFLite with ``BUILTIN_REF`` kernels; the default XNNPACK kernels differ more).
    """

    def __init__(self, model: bytes, kind: str = "tflm"):
        from facemask_edge.convert.runtimes import TFLiteRefRunner, TFLMRunner

        if kind not in REFERENCES:
            raise ModelError(f"unknown reference {kind!r}", f"use one of {', '.join(REFERENCES)}")
        self.kind = kind
        try:
            self._runner = (TFLMRunner(model, arena_size=max(16 * len(model), 4 << 20))
                            if kind == "tflm" else TFLiteRefRunner(model))
        except ConversionError as exc:
            raise ModelError(exc.message, "re-run facemask-edge convert") from None
        self.shape = tuple(int(v) for v in self._runner.input["shape"])

    def scores(self, data: bytes) -> list[int]:
        """Raw int8 outputs for one int8 input (``H*W*C`` bytes)."""
        x = np.frombuffer(data, dtype=np.int8).reshape(self.shape)
        return [int(v) for v in self._runner.run(x)]
