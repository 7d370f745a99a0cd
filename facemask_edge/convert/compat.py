"""Will the boards run it? Every op must be int8 and have a TFLM kernel.

The list is tflite-micro's ``MicroMutableOpResolver`` (``Add...()`` methods), the same table the
firmware's generated op resolver is written from (``facemask_edge.artifacts.tflite``).
"""

from __future__ import annotations

from facemask_edge.artifacts.tflite import RESOLVER_METHODS, TfliteModel
from facemask_edge.errors import ConversionError

__all__ = ["TFLM_OPS", "check_compatible", "incompatibilities"]

# builtin name -> MicroMutableOpResolver method: one table, shared with the firmware exporter.
TFLM_OPS: dict[str, str] = RESOLVER_METHODS

# Ops whose non-constant tensors may legitimately be int32 (shapes, indices).
_INT32_OK = {"RESHAPE", "SHAPE", "STRIDED_SLICE", "GATHER", "PACK", "FILL", "EXPAND_DIMS",
             "ARG_MAX", "ARG_MIN", "CAST"}


def incompatibilities(info: TfliteModel) -> list[str]:
    """Every reason the model would not run int8 on a board, one line each, naming the layer."""
    problems = []
    for op in info.operators:
        where = f"op {op.index} {op.name} (from layer {info.layer_name(op)!r})"
        if op.name not in TFLM_OPS:
            problems.append(f"{where} has no TFLM kernel")
            continue
        if op.name == "DEQUANTIZE":
            problems.append(f"{where} turns int8 back into float: float output left in the model")
            continue
        for j in op.inputs + op.outputs:
            if j < 0:
                continue
            t = info.tensors[j]
            if t.constant and t.dtype in ("int8", "int32"):
                continue  # int8 weights, int32 biases
            if t.dtype == "int8" or (t.dtype == "int32" and op.name in _INT32_OK):
                continue
            if op.name == "QUANTIZE" and t.dtype == "float32":
                problems.append(f"{where} quantizes a float tensor {t.name!r}: float input left in "
                                "the model (convert with int8 input)")
            else:
                problems.append(f"{where} uses {t.dtype} tensor {t.name!r}: not int8")
            break
    for t, kind in [(i, "input") for i in info.inputs] + [(o, "output") for o in info.outputs]:
        if t.dtype != "int8":
            problems.append(f"model {kind} {t.name!r} is {t.dtype}, not int8")
    return problems


def check_compatible(info: TfliteModel) -> None:
    """Raise ``ConversionError`` naming the first offending op and layer (and how many more)."""
    problems = incompatibilities(info)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConversionError(f"not runnable on the boards: {problems[0]}{more}",
                              "keep every layer quantizable to int8; resize and normalize "
                              "outside float ops, and convert with int8 input and output")
