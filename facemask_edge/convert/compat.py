"""Will the boards run it? Every op must be int8 and have a TFLM kernel.

The list is tflite-micro's ``MicroMutableOpResolver`` (``Add...()`` methods), which is also what
the firmware's generated op resolver uses.
"""

from __future__ import annotations

from facemask_edge.convert.tflite_info import ModelInfo
from facemask_edge.errors import ConversionError

__all__ = ["TFLM_OPS", "resolver_method", "check_compatible", "incompatibilities"]

# builtin name -> MicroMutableOpResolver method
TFLM_OPS: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin", "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "CAST": "AddCast", "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D", "COS": "AddCos",
    "DEPTH_TO_SPACE": "AddDepthToSpace", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv", "ELU": "AddElu", "EQUAL": "AddEqual",
    "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor",
    "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather", "GREATER": "AddGreater",
    "HARD_SWISH": "AddHardSwish", "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess",
    "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D", "MEAN": "AddMean", "MINIMUM": "AddMinimum", "MUL": "AddMul",
    "NEG": "AddNeg", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2",
    "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize", "REDUCE_MAX": "AddReduceMax",
    "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "RSQRT": "AddRsqrt",
    "SHAPE": "AddShape", "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUEEZE": "AddSqueeze", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub",
    "SUM": "AddSum", "TANH": "AddTanh", "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv", "UNPACK": "AddUnpack", "ZEROS_LIKE": "AddZerosLike",
}

# Ops whose non-constant tensors may legitimately be int32 (shapes, indices).
_INT32_OK = {"RESHAPE", "SHAPE", "STRIDED_SLICE", "GATHER", "PACK", "FILL", "EXPAND_DIMS",
             "ARG_MAX", "ARG_MIN", "CAST"}


def resolver_method(op_name: str) -> str:
    """The ``MicroMutableOpResolver`` method that registers ``op_name``."""
    try:
        return TFLM_OPS[op_name]
    except KeyError:
        raise ConversionError(f"op {op_name} has no TFLM kernel") from None


def incompatibilities(info: ModelInfo) -> list[str]:
    """Every reason the model would not run int8 on a board, one line each, naming the layer."""
    problems = []
    for op in info.ops:
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
    for j, kind in [(i, "input") for i in info.inputs] + [(o, "output") for o in info.outputs]:
        t = info.tensors[j]
        if t.dtype != "int8":
            problems.append(f"model {kind} {t.name!r} is {t.dtype}, not int8")
    return problems


def check_compatible(info: ModelInfo) -> None:
    """Raise ``ConversionError`` naming the first offending op and layer (and how many more)."""
    problems = incompatibilities(info)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConversionError(f"not runnable on the boards: {problems[0]}{more}",
                              "keep every layer quantizable to int8; resize and normalize "
                              "outside float ops, and convert with int8 input and output")
