"""What the firmware must know about an int8 ``.tflite``, read from the flatbuffer itself.

The model card says which ops a model uses, but a card can be stale or hand-edited; the op
resolver the firmware registers must list exactly what the flatbuffer's operators use, or the
board stops with "Didn't find op for builtin opcode". So the exporter parses the flatbuffer
(TFLite schema bindings shipped with the ``tflite-micro`` package: no TensorFlow import).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from facemask_edge.errors import ConversionError, ModelError

__all__ = ["OpUse", "TensorInfo", "TfliteInfo", "read_tflite", "RESOLVER_METHODS", "resolver_method"]

# Builtin op name -> MicroMutableOpResolver method (tensorflow/lite/micro/micro_mutable_op_resolver.h).
# Only ops with a TFLM kernel are listed; anything else cannot run on the boards.
RESOLVER_METHODS: dict[str, str] = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "ELU": "AddElu",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MAXIMUM": "AddMaximum",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MIRROR_PAD": "AddMirrorPad",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "REDUCE_MAX": "AddReduceMax",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNPACK": "AddUnpack",
    "ZEROS_LIKE": "AddZerosLike",
}

_DTYPES = {0: "float32", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8"}


@dataclass(frozen=True)
class OpUse:
    """One builtin operator as the model uses it."""

    name: str
    version: int
    count: int


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output tensor."""

    shape: tuple[int, ...]
    dtype: str
    scale: float | None
    zero_point: int | None


@dataclass(frozen=True)
class TfliteInfo:
    """What the exporter needs from a flatbuffer."""

    schema_version: int
    ops: tuple[OpUse, ...]  # sorted by name; one entry per builtin op
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(op.name for op in self.ops)


def resolver_method(op_name: str) -> str:
    """``MicroMutableOpResolver`` method that registers ``op_name`` (e.g. ``CONV_2D`` -> ``AddConv2D``)."""
    try:
        return RESOLVER_METHODS[op_name]
    except KeyError:
        raise ConversionError(
            f"op {op_name} has no TensorFlow Lite Micro kernel the exporter knows",
            "rebuild the model from layers TFLM supports (conv, depthwise conv, pooling, dense, "
            "softmax, add, mul, pad, reshape, mean, hard-swish, ...)",
        ) from None


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    return schema


def _tensor(schema, subgraph, index: int) -> TensorInfo:
    t = subgraph.Tensors(index)
    shape = tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    q = t.Quantization()
    scale = zp = None
    if q is not None and q.ScaleLength() == 1:
        scale = float(q.ScaleAsNumpy()[0])
        zp = int(q.ZeroPointAsNumpy()[0])
    return TensorInfo(shape=shape, dtype=_DTYPES.get(t.Type(), f"type{t.Type()}"), scale=scale,
                      zero_point=zp)


def read_tflite(data: bytes) -> TfliteInfo:
    """Parse a ``.tflite`` flatbuffer.

    Raises:
        ModelError: the bytes are not a TFLite flatbuffer.
        ConversionError: the model uses custom operators (no board can resolve them).
    """
    schema = _schema()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError("not a TFLite flatbuffer (no TFL3 identifier)",
                         "export needs model_int8.tflite written by `facemask-edge convert`")
    try:
        model = schema.Model.GetRootAs(data, 0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            # Schema v3a: builtin_code holds codes >= 127, deprecated_builtin_code the older ones.
            code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
            custom = oc.CustomCode()
            codes.append((code, int(oc.Version()), custom.decode() if custom else None))
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        counts: Counter = Counter()
        versions: dict[str, int] = {}
        custom_ops = set()
        for s in range(model.SubgraphsLength()):
            sg = model.Subgraphs(s)
            for o in range(sg.OperatorsLength()):
                code, version, custom = codes[sg.Operators(o).OpcodeIndex()]
                if custom is not None or names.get(code) == "CUSTOM":
                    custom_ops.add(custom or "?")
                    continue
                name = names.get(code, f"BUILTIN_{code}")
                counts[name] += 1
                versions[name] = max(versions.get(name, 0), version)
        sg0 = model.Subgraphs(0)
        inputs = tuple(_tensor(schema, sg0, int(i)) for i in sg0.InputsAsNumpy())
        outputs = tuple(_tensor(schema, sg0, int(i)) for i in sg0.OutputsAsNumpy())
        schema_version = int(model.Version())
    except (IndexError, AttributeError, TypeError, ValueError) as exc:
        raise ModelError(f"corrupt TFLite flatbuffer: {exc}", "re-run `facemask-edge convert`") from None
    if custom_ops:
        raise ConversionError(f"the model uses custom ops ({', '.join(sorted(custom_ops))})",
                              "convert with builtin ops only: boards have no custom kernels")
    ops = tuple(OpUse(n, versions[n], counts[n]) for n in sorted(counts))
    return TfliteInfo(schema_version=schema_version, ops=ops, inputs=inputs, outputs=outputs)
