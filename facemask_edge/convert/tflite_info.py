"""Read a ``.tflite`` flatbuffer: operators with versions, tensors, quantization, MACs per layer.

Pure reading with TensorFlow's generated schema; no interpreter. The facts here feed the
compatibility check, the model card, profiling and the firmware's op resolver.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["TensorInfo", "OpInfo", "ModelInfo", "read_model", "TYPE_NAMES"]

TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string",
              6: "bool", 7: "int16", 9: "int8", 10: "float64"}


@dataclass
class TensorInfo:
    index: int
    name: str
    shape: list[int]
    dtype: str
    scale: list[float]
    zero_point: list[int]
    constant: bool
    bytes: int


@dataclass
class OpInfo:
    index: int
    name: str  # builtin name, e.g. CONV_2D
    version: int
    inputs: list[int]
    outputs: list[int]
    macs: int = 0
    options: dict = field(default_factory=dict)


@dataclass
class ModelInfo:
    tensors: list[TensorInfo]
    ops: list[OpInfo]
    inputs: list[int]
    outputs: list[int]
    flatbuffer_bytes: int

    def op_versions(self) -> list[dict]:
        """Distinct (op, version) pairs with their counts, in first-use order."""
        seen: dict[tuple[str, int], int] = {}
        for op in self.ops:
            seen[(op.name, op.version)] = seen.get((op.name, op.version), 0) + 1
        return [{"name": n, "version": v, "count": c} for (n, v), c in seen.items()]

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def params(self) -> int:
        """Elements of constant tensors (weights and biases)."""
        return sum(int(np.prod(t.shape)) for t in self.tensors if t.constant and t.shape)

    def layer_name(self, op: OpInfo) -> str:
        """The Keras layer that produced this op, from its output tensor's name."""
        name = self.tensors[op.outputs[0]].name if op.outputs else ""
        first = name.split(";")[0]
        parts = [p for p in first.split("/") if p]
        return parts[1] if len(parts) > 2 else (parts[0] if parts else name)


def _schema():
    # The schema bindings shipped with tflite-micro: the same flatbuffer schema, no TensorFlow
    # import (profile and export work, and their tests run, without TensorFlow).
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


def _builtin_names() -> dict[int, str]:
    fb = _schema()

    return {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}


def _macs(name: str, ins: list[TensorInfo], outs: list[TensorInfo]) -> int:
    if not outs or not ins:
        return 0
    out = outs[0].shape
    if name == "CONV_2D" and len(ins) > 1:  # filter [O, kh, kw, I]
        o, kh, kw, i = ins[1].shape
        return int(np.prod(out[:-1])) * o * kh * kw * i
    if name == "DEPTHWISE_CONV_2D" and len(ins) > 1:  # filter [1, kh, kw, C]
        _, kh, kw, _ = ins[1].shape
        return int(np.prod(out)) * kh * kw
    if name == "FULLY_CONNECTED" and len(ins) > 1:  # weights [O, I]
        o, i = ins[1].shape[:2]
        batch = int(np.prod(out[:-1])) if len(out) > 1 else 1
        return batch * o * i
    if name in ("AVERAGE_POOL_2D", "MEAN", "ADD", "MUL"):
        return int(np.prod(ins[0].shape))  # one accumulate per input element
    return 0


def read_model(data: bytes) -> ModelInfo:
    """Parse a TFLite flatbuffer (first subgraph)."""
    fb = _schema()

    model = fb.Model.GetRootAs(data, 0)
    names = _builtin_names()
    sub = model.Subgraphs(0)
    tensors = []
    for i in range(sub.TensorsLength()):
        t = sub.Tensors(i)
        q = t.Quantization()
        scale = [float(x) for x in q.ScaleAsNumpy()] if q is not None and q.ScaleLength() else []
        zp = [int(x) for x in q.ZeroPointAsNumpy()] if q is not None and q.ZeroPointLength() else []
        buf = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
        nbytes = 0
        if buf is not None:
            nbytes = buf.DataLength() or int(buf.Size() if hasattr(buf, "Size") else 0)
        shape = [int(x) for x in t.ShapeAsNumpy()] if t.ShapeLength() else []
        tensors.append(TensorInfo(i, t.Name().decode(), shape, TYPE_NAMES.get(t.Type(), str(t.Type())),
                                  scale, zp, nbytes > 0, nbytes))
    ops = []
    for i in range(sub.OperatorsLength()):
        o = sub.Operators(i)
        code = model.OperatorCodes(o.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{code.CustomCode().decode()}"
        ins = [int(x) for x in o.InputsAsNumpy()] if o.InputsLength() else []
        outs = [int(x) for x in o.OutputsAsNumpy()] if o.OutputsLength() else []
        op = OpInfo(i, name, int(code.Version()), ins, outs)
        op.macs = _macs(name, [tensors[j] for j in ins if j >= 0], [tensors[j] for j in outs])
        ops.append(op)
    return ModelInfo(tensors, ops, [int(x) for x in sub.InputsAsNumpy()],
                     [int(x) for x in sub.OutputsAsNumpy()], len(data))
