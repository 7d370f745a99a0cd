"""The one reader of ``.tflite`` files: operators, tensors, quantization, MACs, resolver names.

Conversion (the model card and the board check), profiling, export (the firmware's op resolver),
Edge Impulse (the input scaling) and the simulator all need facts from the same flatbuffer, and
every one of them must refuse a damaged file the same way: one ``ModelError`` that says the file
is not a valid TFLite model and what to do.

Why a hand-written reader instead of the generated ``schema_py_generated`` bindings: those trust
every offset and length in the file, so a truncated or damaged model fails deep inside them with
``struct.error: unpack_from requires a buffer of at least 3356550950 bytes``, ``IndexError`` or
``UnicodeDecodeError`` (or builds huge arrays from a length field), and they come with
``tflite_micro``, whose import loads the TFLM runtime. This module reads only the fields we use,
with ``struct`` alone, and checks every offset, vector length and index against the file before
using it. TFLM itself trusts the file (no flatbuffer verifier on the boards or in its Python
runtime, which runs in-process in ``board-sim``): a tensor index of -1 where an input is required,
a weight buffer shorter than its shape or a stride of 0 crash the process. So the reader also
checks what the kernels our boards run take for granted: required tensors present, constant data
as long as its shape, the shapes of the convolution, pooling, dense and element-wise ops
consistent, and their strides, dilations and filter sizes positive.

The field numbers follow ``tensorflow/lite/schema/schema.fbs`` (schema version 3).
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from facemask_edge.errors import ConversionError, ModelError

__all__ = [
    "DTYPES",
    "BUILTIN_OPS",
    "RESOLVER_METHODS",
    "Tensor",
    "Operator",
    "OperatorCode",
    "OpUse",
    "Subgraph",
    "TfliteModel",
    "read_tflite",
    "resolver_method",
]

#: The one dtype table: TFLite ``TensorType`` code -> NumPy-style name.
DTYPES: dict[int, str] = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16",
    19: "int2", 20: "uint4", 21: "float8_e4m3fn", 22: "float8_e5m2",
}

#: ``BuiltinOperator`` names, indexed by code (schema.fbs; a test checks it against the schema
#: bindings when they are installed).
BUILTIN_OPS: tuple[str, ...] = (
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE",
    "DEQUANTIZE", "EMBEDDING_LOOKUP", "FLOOR", "FULLY_CONNECTED", "HASHTABLE_LOOKUP",
    "L2_NORMALIZATION", "L2_POOL_2D", "LOCAL_RESPONSE_NORMALIZATION", "LOGISTIC", "LSH_PROJECTION",
    "LSTM", "MAX_POOL_2D", "MUL", "RELU", "RELU_N1_TO_1", "RELU6", "RESHAPE", "RESIZE_BILINEAR",
    "RNN", "SOFTMAX", "SPACE_TO_DEPTH", "SVDF", "TANH", "CONCAT_EMBEDDINGS", "SKIP_GRAM", "CALL",
    "CUSTOM", "EMBEDDING_LOOKUP_SPARSE", "PAD", "UNIDIRECTIONAL_SEQUENCE_RNN", "GATHER",
    "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "TRANSPOSE", "MEAN", "SUB", "DIV", "SQUEEZE",
    "UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE", "BIDIRECTIONAL_SEQUENCE_RNN", "EXP", "TOPK_V2",
    "SPLIT", "LOG_SOFTMAX", "DELEGATE", "BIDIRECTIONAL_SEQUENCE_LSTM", "CAST", "PRELU", "MAXIMUM",
    "ARG_MAX", "MINIMUM", "LESS", "NEG", "PADV2", "GREATER", "GREATER_EQUAL", "LESS_EQUAL",
    "SELECT", "SLICE", "SIN", "TRANSPOSE_CONV", "SPARSE_TO_DENSE", "TILE", "EXPAND_DIMS", "EQUAL",
    "NOT_EQUAL", "LOG", "SUM", "SQRT", "RSQRT", "SHAPE", "POW", "ARG_MIN", "FAKE_QUANT",
    "REDUCE_PROD", "REDUCE_MAX", "PACK", "LOGICAL_OR", "ONE_HOT", "LOGICAL_AND", "LOGICAL_NOT",
    "UNPACK", "REDUCE_MIN", "FLOOR_DIV", "REDUCE_ANY", "SQUARE", "ZEROS_LIKE", "FILL", "FLOOR_MOD",
    "RANGE", "RESIZE_NEAREST_NEIGHBOR", "LEAKY_RELU", "SQUARED_DIFFERENCE", "MIRROR_PAD", "ABS",
    "SPLIT_V", "UNIQUE", "CEIL", "REVERSE_V2", "ADD_N", "GATHER_ND", "COS", "WHERE", "RANK", "ELU",
    "REVERSE_SEQUENCE", "MATRIX_DIAG", "QUANTIZE", "MATRIX_SET_DIAG", "ROUND", "HARD_SWISH", "IF",
    "WHILE", "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5", "SCATTER_ND", "SELECT_V2",
    "DENSIFY", "SEGMENT_SUM", "BATCH_MATMUL", "PLACEHOLDER_FOR_GREATER_OP_CODES", "CUMSUM",
    "CALL_ONCE", "BROADCAST_TO", "RFFT2D", "CONV_3D", "IMAG", "REAL", "COMPLEX_ABS", "HASHTABLE",
    "HASHTABLE_FIND", "HASHTABLE_IMPORT", "HASHTABLE_SIZE", "REDUCE_ALL", "CONV_3D_TRANSPOSE",
    "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "BROADCAST_ARGS", "RANDOM_STANDARD_NORMAL",
    "BUCKETIZE", "RANDOM_UNIFORM", "MULTINOMIAL", "GELU", "DYNAMIC_UPDATE_SLICE", "RELU_0_TO_1",
    "UNSORTED_SEGMENT_PROD", "UNSORTED_SEGMENT_MAX", "UNSORTED_SEGMENT_SUM", "ATAN2",
    "UNSORTED_SEGMENT_MIN", "SIGN", "BITCAST", "BITWISE_XOR", "RIGHT_SHIFT", "STABLEHLO_LOGISTIC",
    "STABLEHLO_ADD", "STABLEHLO_DIVIDE", "STABLEHLO_MULTIPLY", "STABLEHLO_MAXIMUM",
    "STABLEHLO_RESHAPE", "STABLEHLO_CLAMP", "STABLEHLO_CONCATENATE", "STABLEHLO_BROADCAST_IN_DIM",
    "STABLEHLO_CONVOLUTION", "STABLEHLO_SLICE", "STABLEHLO_CUSTOM_CALL", "STABLEHLO_REDUCE",
    "STABLEHLO_ABS", "STABLEHLO_AND", "STABLEHLO_COSINE", "STABLEHLO_EXPONENTIAL",
    "STABLEHLO_FLOOR", "STABLEHLO_LOG", "STABLEHLO_MINIMUM", "STABLEHLO_NEGATE", "STABLEHLO_OR",
    "STABLEHLO_POWER", "STABLEHLO_REMAINDER", "STABLEHLO_RSQRT", "STABLEHLO_SELECT",
    "STABLEHLO_SUBTRACT", "STABLEHLO_TANH", "STABLEHLO_SCATTER", "STABLEHLO_COMPARE",
    "STABLEHLO_CONVERT", "STABLEHLO_DYNAMIC_SLICE", "STABLEHLO_DYNAMIC_UPDATE_SLICE",
    "STABLEHLO_PAD", "STABLEHLO_IOTA", "STABLEHLO_DOT_GENERAL", "STABLEHLO_REDUCE_WINDOW",
    "STABLEHLO_SORT", "STABLEHLO_WHILE", "STABLEHLO_GATHER", "STABLEHLO_TRANSPOSE", "DILATE",
    "STABLEHLO_RNG_BIT_GENERATOR", "REDUCE_WINDOW", "STABLEHLO_COMPOSITE", "STABLEHLO_SHIFT_LEFT",
    "STABLEHLO_CBRT", "STABLEHLO_CASE",
)

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

_SCHEMA_VERSION = 3  # TFLM refuses any other
_IDENTIFIER = b"TFL3"
_MAX_BYTES = 1 << 31  # 32-bit flatbuffer offsets: a flatbuffer is smaller than 2 GiB
# Bits per element of the types whose constant data has a fixed size (strings and handles do not).
_BITS = {"float32": 32, "float16": 16, "int32": 32, "uint8": 8, "int64": 64, "bool": 8, "int16": 16,
         "complex64": 64, "int8": 8, "float64": 64, "complex128": 128, "uint64": 64, "uint32": 32,
         "uint16": 16, "int4": 4, "bfloat16": 16, "int2": 2, "uint4": 4, "float8_e4m3fn": 8,
         "float8_e5m2": 8}
_DEFAULT_HINT = ("re-run `facemask-edge convert RUN_DIR` to write it again, or pass an int8 "
                 ".tflite written by the TFLite converter")


def resolver_method(op_name: str) -> str:
    """``MicroMutableOpResolver`` method that registers ``op_name`` (``CONV_2D`` -> ``AddConv2D``).

    Raises:
        ConversionError: TFLM has no kernel for the op.
    """
    try:
        return RESOLVER_METHODS[op_name]
    except KeyError:
        raise ConversionError(
            f"op {op_name} has no TensorFlow Lite Micro kernel the exporter knows",
            "rebuild the model from layers TFLM supports (conv, depthwise conv, pooling, dense, "
            "softmax, add, mul, pad, reshape, mean, hard-swish, ...)",
        ) from None


# ---------------------------------------------------------------------------------------------
# What the reader gives


@dataclass(frozen=True)
class Tensor:
    """One tensor of a subgraph.

    ``scales``/``zero_points`` hold every channel's quantization (empty when not quantized);
    ``scale``/``zero_point`` are the per-tensor values (None unless there is exactly one).
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    quantized_dimension: int
    buffer: int
    data_bytes: int  # bytes of constant data in the file (0: computed at run time)

    @property
    def constant(self) -> bool:
        """Weights or biases stored in the file."""
        return self.data_bytes > 0

    @property
    def scale(self) -> float | None:
        return self.scales[0] if len(self.scales) == 1 else None

    @property
    def zero_point(self) -> int | None:
        return self.zero_points[0] if len(self.zero_points) == 1 else None

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class OperatorCode:
    """One entry of the model's operator-code table (operators refer to it by index)."""

    index: int
    name: str  # builtin name (CONV_2D), or CUSTOM:<custom code>
    builtin_code: int
    version: int
    custom_code: str | None


@dataclass(frozen=True)
class Operator:
    """One operator of a subgraph, in execution order. Tensor indices of -1 are absent inputs."""

    index: int
    name: str
    version: int
    opcode_index: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    macs: int  # multiply-accumulates, for the ops that dominate the cost; 0 for the others


@dataclass(frozen=True)
class OpUse:
    """One operator name as the model uses it: highest version and how many operators."""

    name: str
    version: int
    count: int


@dataclass(frozen=True)
class Subgraph:
    name: str
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


@dataclass(frozen=True)
class TfliteModel:
    """A validated ``.tflite``. Tensors, operators, inputs and outputs are the main (first)
    subgraph's; op uses and operator codes cover every subgraph. ``data`` holds the bytes that
    were validated: hand those (not a second read of the file) to TFLM or the exporter."""

    data: bytes = field(repr=False, compare=False)
    schema_version: int
    flatbuffer_bytes: int
    description: str
    operator_codes: tuple[OperatorCode, ...]
    subgraphs: tuple[Subgraph, ...]
    buffer_count: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def tensors(self) -> tuple[Tensor, ...]:
        return self.subgraphs[0].tensors

    @property
    def operators(self) -> tuple[Operator, ...]:
        return self.subgraphs[0].operators

    @property
    def inputs(self) -> tuple[Tensor, ...]:
        return self.subgraphs[0].inputs

    @property
    def outputs(self) -> tuple[Tensor, ...]:
        return self.subgraphs[0].outputs

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.operators)

    @property
    def params(self) -> int:
        """Elements of constant tensors (weights and biases)."""
        return sum(t.elements for t in self.tensors if t.constant and t.shape)

    def _all_operators(self):
        return (op for sg in self.subgraphs for op in sg.operators)

    @property
    def used_codes(self) -> tuple[OperatorCode, ...]:
        """Operator codes some operator refers to."""
        used = {op.opcode_index for op in self._all_operators()}
        return tuple(c for c in self.operator_codes if c.index in used)

    @property
    def unused_codes(self) -> tuple[OperatorCode, ...]:
        """Operator codes no operator refers to (converters leave some, e.g. QUANTIZE in VWW)."""
        used = {op.opcode_index for op in self._all_operators()}
        return tuple(c for c in self.operator_codes if c.index not in used)

    def op_versions(self) -> list[dict]:
        """Distinct (op, version) pairs with their counts, in first-use order (the model card's)."""
        seen: Counter = Counter()
        for op in self._all_operators():
            seen[(op.name, op.version)] += 1
        return [{"name": n, "version": v, "count": c} for (n, v), c in seen.items()]

    @property
    def op_uses(self) -> tuple[OpUse, ...]:
        """One entry per op name the operators use, sorted by name (custom ops included)."""
        counts: Counter = Counter()
        versions: dict[str, int] = {}
        for op in self._all_operators():
            counts[op.name] += 1
            versions[op.name] = max(versions.get(op.name, 0), op.version)
        return tuple(OpUse(n, versions[n], counts[n]) for n in sorted(counts))

    @property
    def op_names(self) -> tuple[str, ...]:
        return tuple(u.name for u in self.op_uses)

    @property
    def custom_ops(self) -> tuple[str, ...]:
        """Custom codes of the custom operators used (no board has kernels for them)."""
        return tuple(n.split(":", 1)[1] for n in self.op_names if n.startswith("CUSTOM:"))

    def resolver_methods(self) -> tuple[str, ...]:
        """``MicroMutableOpResolver`` methods for every op used, in ``op_uses`` order.

        Raises:
            ConversionError: an op has no TFLM kernel.
        """
        return tuple(resolver_method(n) for n in self.op_names)

    def layer_name(self, op: Operator) -> str:
        """The Keras layer that produced ``op`` (of the main subgraph), from its output's name."""
        out = op.outputs[0] if op.outputs else -1
        name = self.tensors[out].name if 0 <= out < len(self.tensors) else ""
        first = name.split(";")[0]
        parts = [p for p in first.split("/") if p]
        return parts[1] if len(parts) > 2 else (parts[0] if parts else name)


def read_tflite(model: bytes | bytearray | memoryview | str | os.PathLike, *,
                name: str | None = None, hint: str | None = None) -> TfliteModel:
    """Read and validate a ``.tflite`` file (a path) or its bytes.

    Args:
        model: a path, or the file's bytes.
        name: what to call the model in messages (default: the path, if one was given).
        hint: what the user should do about a bad file (default: re-run convert).

    Returns:
        The model, every index in it checked.

    Raises:
        ModelError: the file cannot be read, or is not a valid TFLite model (truncated,
            damaged, another format, or a flatbuffer whose indices point nowhere).
    """
    hint = hint or _DEFAULT_HINT
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        name = name or str(path)
        try:
            size = path.stat().st_size
            if size >= _MAX_BYTES:
                raise ModelError(f"{name} is not a valid TFLite model: {size:,} bytes, more than "
                                 "a flatbuffer can hold", hint)
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"{name} not found", hint) from None
        except OSError as exc:
            raise ModelError(f"cannot read {name}: {exc.strerror or exc}", hint) from None
    else:
        data = bytes(model)
    try:
        return _parse(data)
    except _Invalid as exc:
        what = f"{name} is not a valid TFLite model" if name else "not a valid TFLite model"
        raise ModelError(f"{what}: {exc}", hint) from None


# ---------------------------------------------------------------------------------------------
# A bounds-checked flatbuffer reader for the fields above


class _Invalid(Exception):
    """What is wrong with the file; ``read_tflite`` turns it into one ``ModelError``."""


class _Table:
    """A flatbuffer table whose vtable and inline size have been checked against the file."""

    __slots__ = ("data", "pos", "vtable", "vtable_size", "size", "what")

    def __init__(self, data: bytes, pos: int, what: str):
        n = len(data)
        if pos < 0 or pos + 4 > n:
            raise _Invalid(f"{what} at byte {pos} lies outside the {n}-byte file")
        vtable = pos - struct.unpack_from("<i", data, pos)[0]
        if vtable < 0 or vtable + 4 > n:
            raise _Invalid(f"{what} at byte {pos} has its field table outside the file")
        vtable_size, size = struct.unpack_from("<HH", data, vtable)
        if vtable_size < 4 or vtable_size % 2 or vtable + vtable_size > n:
            raise _Invalid(f"{what} at byte {pos} has a field table of {vtable_size} bytes")
        if size < 4 or pos + size > n:
            raise _Invalid(f"{what} at byte {pos} claims {size} bytes, past the end of the file")
        self.data, self.pos, self.vtable, self.vtable_size, self.size, self.what = (
            data, pos, vtable, vtable_size, size, what)

    def _field(self, field: int, nbytes: int) -> int | None:
        """Absolute position of ``field`` (``nbytes`` wide, inline), or None when absent."""
        slot = 4 + 2 * field
        if slot + 2 > self.vtable_size:
            return None
        offset = struct.unpack_from("<H", self.data, self.vtable + slot)[0]
        if offset == 0:
            return None
        if offset < 4 or offset + nbytes > self.size:
            raise _Invalid(f"{self.what}: field {field} lies outside its table")
        return self.pos + offset

    def scalar(self, field: int, fmt: str, default):
        pos = self._field(field, struct.calcsize("<" + fmt))
        return default if pos is None else struct.unpack_from("<" + fmt, self.data, pos)[0]

    def _target(self, field: int, what: str) -> int | None:
        """Where the offset stored in ``field`` points, checked to leave room for a length."""
        pos = self._field(field, 4)
        if pos is None:
            return None
        target = pos + struct.unpack_from("<I", self.data, pos)[0]
        if target + 4 > len(self.data):
            raise _Invalid(f"{what} points past the end of the file")
        return target

    def _vector(self, field: int, elem: int, what: str) -> tuple[int, int] | None:
        """(start, count) of a vector, its length checked against the file before any use."""
        target = self._target(field, what)
        if target is None:
            return None
        count = struct.unpack_from("<I", self.data, target)[0]
        start = target + 4
        if count * elem > len(self.data) - start:
            raise _Invalid(f"{what} claims {count:,} entries, more than the file holds")
        return start, count

    def scalars(self, field: int, fmt: str, what: str) -> tuple:
        vec = self._vector(field, struct.calcsize("<" + fmt), what)
        if vec is None:
            return ()
        start, count = vec
        return struct.unpack_from(f"<{count}{fmt}", self.data, start)

    def vector_bytes(self, field: int, what: str) -> int:
        """Length of a byte vector (checked; the bytes themselves are not copied)."""
        vec = self._vector(field, 1, what)
        return 0 if vec is None else vec[1]

    def string(self, field: int, what: str) -> str | None:
        vec = self._vector(field, 1, what)
        if vec is None:
            return None
        start, count = vec
        try:
            return self.data[start:start + count].decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid(f"{what} is not UTF-8 text") from None

    def table(self, field: int, what: str) -> _Table | None:
        pos = self._field(field, 4)
        if pos is None:
            return None
        return _Table(self.data, pos + struct.unpack_from("<I", self.data, pos)[0], what)

    def tables(self, field: int, what: str) -> list[_Table]:
        vec = self._vector(field, 4, what)
        if vec is None:
            return []
        start, count = vec
        out = []
        for i in range(count):
            pos = start + 4 * i
            out.append(_Table(self.data, pos + struct.unpack_from("<I", self.data, pos)[0],
                              f"{what} {i}"))
        return out


def _parse(data: bytes) -> TfliteModel:
    n = len(data)
    if n < 8:
        raise _Invalid(f"{n} bytes, too short for a flatbuffer" if n else "the file is empty")
    if data[4:8] != _IDENTIFIER:
        raise _Invalid("no TFL3 file identifier at byte 4 (not a TFLite flatbuffer)")
    root = _Table(data, struct.unpack_from("<I", data, 0)[0], "the model table")
    version = root.scalar(0, "I", 0)
    if version != _SCHEMA_VERSION:
        raise _Invalid(f"schema version {version}, TFLite Micro reads version {_SCHEMA_VERSION}")
    codes = tuple(_operator_code(i, t) for i, t in enumerate(root.tables(1, "operator code")))
    subgraph_tables = root.tables(2, "subgraph")
    if not subgraph_tables:
        raise _Invalid("no subgraphs")
    description = root.string(3, "the description") or ""
    buffers = tuple(_buffer_bytes(t, n) for t in root.tables(4, "buffer"))
    for b in root.scalars(5, "i", "the metadata buffer list"):
        _check_index(b, len(buffers), "metadata buffer")
    # TFLM reads metadata (e.g. the offline memory plan) through these buffer indices.
    for t in root.tables(6, "metadata"):
        t.string(0, f"{t.what} name")
        _check_index(t.scalar(1, "I", 0), len(buffers), f"{t.what} buffer")
    for t in root.tables(7, "signature"):
        t.string(2, f"{t.what} key")
        _check_index(t.scalar(3, "I", 0), len(subgraph_tables), f"{t.what} subgraph")
        for k in (0, 1):
            for m in t.tables(k, f"{t.what} tensor map"):
                m.string(0, f"{m.what} name")
    # TFLM's compression stores constants bit-packed, described by this metadata entry.
    compressed = any(t.string(0, f"{t.what} name") == "COMPRESSION_METADATA"
                     for t in root.tables(6, "metadata"))
    subgraphs = tuple(_subgraph(i, t, codes, buffers, compressed)
                      for i, t in enumerate(subgraph_tables))
    if not subgraphs[0].inputs or not subgraphs[0].outputs:
        raise _Invalid("the main subgraph has no inputs or no outputs")
    return TfliteModel(data=data, schema_version=version, flatbuffer_bytes=n, description=description,
                       operator_codes=codes, subgraphs=subgraphs, buffer_count=len(buffers))


def _check_index(index: int, count: int, what: str, optional: bool = False) -> None:
    if not (-1 if optional else 0) <= index < count:
        raise _Invalid(f"{what} refers to entry {index} of {count}")


def _operator_code(index: int, t: _Table) -> OperatorCode:
    # Schema 3a: builtin_code holds every code, deprecated_builtin_code (a signed byte) the ones
    # below 127 for old readers; the larger of the two is the op (as TFLite's GetBuiltinCode).
    code = max(t.scalar(0, "b", 0), t.scalar(3, "i", 0))
    custom = t.string(1, f"{t.what} custom code")
    version = t.scalar(2, "i", 1)
    if not 0 <= code < len(BUILTIN_OPS):
        raise _Invalid(f"{t.what} is builtin operator {code}, which TFLite does not define")
    if version < 1:
        raise _Invalid(f"{t.what} has version {version}")
    name = BUILTIN_OPS[code]
    if name == "CUSTOM":
        name = f"CUSTOM:{custom or '?'}"
    return OperatorCode(index=index, name=name, builtin_code=code, version=version,
                        custom_code=custom)


def _buffer_bytes(t: _Table, file_bytes: int) -> int:
    size = t.vector_bytes(0, f"{t.what} data")
    # Models over 2 GiB keep buffers after the flatbuffer (offset from the file's start; 0 and 1
    # mean "not used").
    offset, outside = t.scalar(1, "Q", 0), t.scalar(2, "Q", 0)
    if offset > 1:
        if offset + outside > file_bytes:
            raise _Invalid(f"{t.what} data lies past the end of the file")
        size = size or outside
    return size


def _tensor(index: int, t: _Table, buffers: tuple[int, ...], compressed: bool) -> Tensor:
    shape = t.scalars(0, "i", f"{t.what} shape")
    if any(d < 0 for d in shape):
        raise _Invalid(f"{t.what} has shape {list(shape)}")
    type_code = t.scalar(1, "b", 0)
    if type_code not in DTYPES:
        raise _Invalid(f"{t.what} has type code {type_code}, which TFLite does not define")
    dtype = DTYPES[type_code]
    buffer = t.scalar(2, "I", 0)
    _check_index(buffer, len(buffers), f"{t.what} buffer")
    data_bytes = buffers[buffer]
    name = t.string(3, f"{t.what} name") or ""
    scales: tuple = ()
    zero_points: tuple = ()
    qdim = 0
    q = t.table(4, f"{t.what} quantization")
    if q is not None:
        scales = q.scalars(2, "f", f"{q.what} scales")
        zero_points = q.scalars(3, "q", f"{q.what} zero points")
        qdim = q.scalar(6, "i", 0)
        # TFLM reads one zero point per scale, and derives fixed-point multipliers from scales.
        if len(scales) != len(zero_points):
            raise _Invalid(f"{t.what} has {len(scales)} scales but {len(zero_points)} zero points")
        # Kernels divide by activation scales; a weight channel of zeros may have scale 0.
        low_scale = 0.0 if data_bytes else 1e-30
        if not all(low_scale <= s < 1e30 for s in scales):  # also false for NaN
            raise _Invalid(f"{t.what} has a quantization scale that is not a positive number")
        bits = _BITS.get(dtype, 64)
        low = 0 if dtype.startswith("u") else -(1 << (bits - 1))
        if bits <= 16 and not all(low <= z < low + (1 << bits) for z in zero_points):
            raise _Invalid(f"{t.what} has a zero point outside its type's range")
        # Per-channel quantization: TFLM indexes the scales by the channel of this dimension.
        if len(scales) > 1 and not (0 <= qdim < len(shape) and shape[qdim] == len(scales)):
            raise _Invalid(f"{t.what} has {len(scales)} scales for dimension {qdim} of "
                           f"shape {list(shape)}")
    # Kernels read constants by their shape: data shorter than that is read past its end.
    sparse = t.table(6, f"{t.what} sparsity") is not None
    if data_bytes and dtype in _BITS and not sparse and not compressed:
        want = (math.prod(shape) * _BITS[dtype] + 7) // 8
        if data_bytes != want:
            raise _Invalid(f"{t.what} ({dtype} {list(shape)}) holds {data_bytes} bytes of data, "
                           f"not {want}")
    return Tensor(index=index, name=name, shape=tuple(shape), dtype=dtype,
                  scales=tuple(float(s) for s in scales), zero_points=tuple(zero_points),
                  quantized_dimension=qdim, buffer=buffer, data_bytes=data_bytes)


def _operator(index: int, t: _Table, codes: tuple[OperatorCode, ...],
              tensors: tuple[Tensor, ...]) -> Operator:
    opcode = t.scalar(0, "I", 0)
    _check_index(opcode, len(codes), f"{t.what} operator code")
    inputs = t.scalars(1, "i", f"{t.what} inputs")
    outputs = t.scalars(2, "i", f"{t.what} outputs")
    for j in inputs + outputs + t.scalars(8, "i", f"{t.what} intermediates"):
        _check_index(j, len(tensors), f"{t.what} tensor", optional=True)
    # TFLM parses the options through their offsets: the tables must at least lie in the file.
    options = t.table(4, f"{t.what} options")
    t.table(12, f"{t.what} options")
    t.vector_bytes(5, f"{t.what} custom options")
    t.scalars(7, "b", f"{t.what} mutating inputs")
    code = codes[opcode]
    ins = [tensors[j] if j >= 0 else None for j in inputs]
    outs = [tensors[j] if j >= 0 else None for j in outputs]
    what = f"{t.what} ({code.name})"
    if not outs or None in outs or (ins and ins[0] is None):
        raise _Invalid(f"{what} lacks its first input or an output")
    _check_options(code.name, t.scalar(3, "B", 0), options, what)
    _check_shapes(code.name, ins, outs, what)
    return Operator(index=index, name=code.name, version=code.version, opcode_index=opcode,
                    inputs=tuple(inputs), outputs=tuple(outputs), macs=_macs(code.name, ins, outs))


def _subgraph(index: int, t: _Table, codes: tuple[OperatorCode, ...],
              buffers: tuple[int, ...], compressed: bool) -> Subgraph:
    tensors = tuple(_tensor(i, tt, buffers, compressed)
                    for i, tt in enumerate(t.tables(0, f"{t.what} tensor")))
    io = []
    for slot, what in ((1, "input"), (2, "output")):
        indices = t.scalars(slot, "i", f"{t.what} {what}s")
        for j in indices:
            _check_index(j, len(tensors), f"{t.what} {what}")
        io.append(tuple(tensors[j] for j in indices))
    operators = tuple(_operator(i, ot, codes, tensors)
                      for i, ot in enumerate(t.tables(3, f"{t.what} operator")))
    name = t.string(4, f"{t.what} name") or ""
    return Subgraph(name=name, tensors=tensors, operators=operators, inputs=io[0], outputs=io[1])


# op -> (BuiltinOptions type, {field: (format, what)} that must be >= 1). Without the options
# TFLM leaves strides at 0 and divides by them.
_POSITIVE_OPTIONS = {
    "CONV_2D": (1, {1: "stride", 2: "stride", 4: "dilation", 5: "dilation"}),
    "DEPTHWISE_CONV_2D": (2, {1: "stride", 2: "stride", 3: "depth multiplier", 5: "dilation",
                              6: "dilation"}),
    "AVERAGE_POOL_2D": (5, {1: "stride", 2: "stride", 3: "filter size", 4: "filter size"}),
    "MAX_POOL_2D": (5, {1: "stride", 2: "stride", 3: "filter size", 4: "filter size"}),
}
_DEFAULT_ONE = {("CONV_2D", 4), ("CONV_2D", 5), ("DEPTHWISE_CONV_2D", 5), ("DEPTHWISE_CONV_2D", 6)}
_SAME_SHAPE_OPS = {"SOFTMAX", "RELU", "RELU6", "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU",
                   "QUANTIZE", "DEQUANTIZE", "ABS", "NEG", "ELU", "PRELU"}
_SHAPE_CHECKED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D",
                  "MAX_POOL_2D", "RESHAPE", "ADD", "SUB", "MUL", *_SAME_SHAPE_OPS}


def _check_options(name: str, options_type: int, options: _Table | None, what: str) -> None:
    if name == "SOFTMAX":  # TFLM derives a fixed-point multiplier from beta
        beta = options.scalar(0, "f", 0.0) if options is not None and options_type == 9 else 0.0
        if not 1e-6 < beta < 1e6:
            raise _Invalid(f"{what} has beta {beta}")
        return
    if name not in _POSITIVE_OPTIONS:
        return
    want_type, fields = _POSITIVE_OPTIONS[name]
    if options is None or options_type != want_type:
        raise _Invalid(f"{what} has no options (strides, filter size)")
    for field_index, meaning in fields.items():
        value = options.scalar(field_index, "i", 1 if (name, field_index) in _DEFAULT_ONE else 0)
        if value < 1:
            raise _Invalid(f"{what} has {meaning} {value}")
    if options.scalar(0, "b", 0) not in (0, 1):  # padding: SAME or VALID
        raise _Invalid(f"{what} has an unknown padding")


def _check_shapes(name: str, ins: list[Tensor | None], outs: list[Tensor], what: str) -> None:
    """The shape relations the board kernels rely on without checking them."""
    def need(ok: bool, problem: str) -> None:
        if not ok:
            shapes = ", ".join(str(list(t.shape)) if t else "-" for t in ins)
            raise _Invalid(f"{what} {problem} (inputs {shapes} -> output {list(outs[0].shape)})")

    y = outs[0].shape
    if not ins:  # some ops take none (VAR_HANDLE); none of those checked below
        need(name not in _SHAPE_CHECKED, "has no inputs")
        return
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        need(len(ins) >= 2 and ins[1] is not None, "has no filter")
        x, w = ins[0].shape, ins[1].shape
        need(len(x) == len(w) == len(y) == 4 and x[0] == y[0], "has shapes that are not 4-D images")
        if name == "CONV_2D":  # filter [O, kh, kw, I]; I divides the input channels (groups)
            need(w[3] > 0 and x[3] % w[3] == 0 and y[3] == w[0], "has mismatched channels")
        else:  # filter [1, kh, kw, C]
            need(y[3] == w[3], "has mismatched channels")
        # Unlike FULLY_CONNECTED, TFLM's convolutions do not take an absent (-1) bias.
        need(None not in ins, "has an absent input")
        need(len(ins) < 3 or ins[2].elements == y[3], "has a bias of the wrong size")
    elif name == "FULLY_CONNECTED":
        need(len(ins) >= 2 and ins[1] is not None and len(ins[1].shape) == 2, "has no 2-D weights")
        o, i = ins[1].shape
        n = ins[0].elements
        need(i > 0 and n % i == 0 and outs[0].elements == n // i * o, "has mismatched sizes")
        need(len(ins) < 3 or ins[2] is None or ins[2].elements == o, "has a bias of the wrong size")
    elif name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        x = ins[0].shape
        need(len(x) == len(y) == 4 and x[0] == y[0] and x[3] == y[3], "has mismatched shapes")
    elif name in _SAME_SHAPE_OPS:
        need(ins[0].shape == y, "changes the shape")
    elif name == "RESHAPE":
        need(ins[0].elements == outs[0].elements, "changes the number of elements")
    elif name in ("ADD", "SUB", "MUL"):  # inputs broadcast to the output
        need(len(ins) == 2 and ins[1] is not None, "needs two inputs")
        for t in ins:
            s = t.shape
            need(len(s) <= len(y) and all(a in (1, b) for a, b in zip(reversed(s), reversed(y))),
                 "has inputs that do not broadcast to the output")


def _macs(name: str, ins: list[Tensor | None], outs: list[Tensor | None]) -> int:
    """Multiply-accumulates of one op from its tensor shapes (0 when the shapes do not fit)."""
    if not ins or not outs or ins[0] is None or outs[0] is None:
        return 0
    out = outs[0].shape
    weights = ins[1].shape if len(ins) > 1 and ins[1] is not None else ()
    if name == "CONV_2D" and len(weights) == 4:  # filter [O, kh, kw, I]
        o, kh, kw, i = weights
        return math.prod(out[:-1]) * o * kh * kw * i
    if name == "DEPTHWISE_CONV_2D" and len(weights) == 4:  # filter [1, kh, kw, C]
        return math.prod(out) * weights[1] * weights[2]
    if name == "FULLY_CONNECTED" and len(weights) >= 2:  # weights [O, I]
        batch = math.prod(out[:-1]) if len(out) > 1 else 1
        return batch * weights[0] * weights[1]
    if name in ("AVERAGE_POOL_2D", "MEAN", "ADD", "MUL"):
        return ins[0].elements  # one accumulate per input element
    return 0
