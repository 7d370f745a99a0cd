"""The one ``.tflite`` reader: facts of a real int8 model, and strict refusal of anything else.

No TensorFlow: the models are the checked-in fixture (tests/fixtures/tiny_int8.tflite) and the
MLPerf Tiny VWW reference when ../shared (or FACEMASK_WEIGHTS) has it. The fuzz is time-boxed
(FACEMASK_EDGE_FUZZ_SECONDS, default 10 s split over the fuzz tests) and accepts only two
outcomes: a model, or one ModelError saying the file is not a valid TFLite model.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

from facemask_edge.artifacts.tflite import (BUILTIN_OPS, DTYPES, RESOLVER_METHODS, TfliteModel,
                                            read_tflite, resolver_method)
from facemask_edge.errors import ConversionError, ModelError

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny_int8.tflite"
# ../shared/weights next to the checkout, or FACEMASK_WEIGHTS (e.g. from a git worktree).
VWW = Path(os.environ.get("FACEMASK_WEIGHTS", Path(__file__).resolve().parents[2] / "shared" / "weights")
           ) / "vww_96_int8.tflite"
FUZZ_SECONDS = float(os.environ.get("FACEMASK_EDGE_FUZZ_SECONDS", "10"))


def _vww() -> bytes:
    if not VWW.is_file():
        pytest.skip(f"{VWW} not present")
    return VWW.read_bytes()


def test_reads_the_tiny_int8_model_without_tensorflow():
    m = read_tflite(TINY)
    assert m.schema_version == 3 and m.flatbuffer_bytes == TINY.stat().st_size
    assert [(d["name"], d["version"], d["count"]) for d in m.op_versions()] == [
        ("CONV_2D", 3, 2), ("DEPTHWISE_CONV_2D", 3, 1), ("MEAN", 2, 1),
        ("FULLY_CONNECTED", 4, 1), ("SOFTMAX", 2, 1)]
    assert m.op_names == ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "SOFTMAX")
    assert m.resolver_methods() == ("AddConv2D", "AddDepthwiseConv2D", "AddFullyConnected",
                                    "AddMean", "AddSoftmax")
    assert m.unused_codes == () and len(m.used_codes) == len(m.operator_codes) == 5
    (inp,), (out,) = m.inputs, m.outputs
    assert (inp.shape, inp.dtype, inp.zero_point) == ((1, 24, 24, 3), "int8", -128)
    assert inp.scale == pytest.approx(1 / 255, rel=1e-3)
    assert (out.shape, out.dtype, out.scale, out.zero_point) == ((1, 2), "int8", 1 / 256, -128)
    # Figures the old converter reader (TensorFlow's schema bindings) gave for this file.
    assert (m.macs, m.params) == (51856, 394)
    assert [(op.name, m.layer_name(op), op.macs) for op in m.operators] == [
        ("CONV_2D", "conv2d", 31104), ("DEPTHWISE_CONV_2D", "depthwise_conv2d", 10368),
        ("CONV_2D", "conv2d_1", 9216), ("MEAN", "global_average_pooling2d", 1152),
        ("FULLY_CONNECTED", "dense", 16), ("SOFTMAX", "StatefulPartitionedCall:0", 0)]
    conv = m.operators[0]
    weights = m.tensors[conv.inputs[1]]
    assert weights.constant and weights.dtype == "int8" and len(weights.scales) == weights.shape[0]


def test_reader_imports_neither_tensorflow_nor_tflite_micro():
    code = ("import sys; from facemask_edge.artifacts.tflite import read_tflite; "
            f"read_tflite({str(TINY)!r}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tflite_micro', 'flatbuffers', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[]"


def test_vww_reference_unused_codes_and_figures():
    m = read_tflite(_vww(), name="vww_96_int8.tflite")
    assert sorted(c.name for c in m.unused_codes) == ["DEQUANTIZE", "QUANTIZE"]
    assert "QUANTIZE" not in m.op_names and "DEQUANTIZE" not in m.op_names
    assert m.op_names == ("AVERAGE_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
                          "RESHAPE", "SOFTMAX")
    # Same figures as the three readers this one replaced.
    assert (m.macs, m.params) == (7491968, 210852)
    assert m.inputs[0].shape == (1, 96, 96, 3) and m.outputs[0].shape == (1, 2)


@pytest.mark.parametrize("which", ["tiny", "vww"])
def test_agrees_with_tflite_schema_bindings(which):
    """An independent oracle: TFLite's generated flatbuffer bindings read the same facts."""
    schema = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")
    data = TINY.read_bytes() if which == "tiny" else _vww()
    m = read_tflite(data)
    fb = schema.Model.GetRootAs(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [fb.OperatorCodes(i) for i in range(fb.OperatorCodesLength())]
    assert [(c.name, c.version) for c in m.operator_codes] == [
        (names[max(c.BuiltinCode(), c.DeprecatedBuiltinCode())], c.Version()) for c in codes]
    g = fb.Subgraphs(0)
    assert len(m.tensors) == g.TensorsLength() and len(m.operators) == g.OperatorsLength()
    for t in m.tensors:
        ft = g.Tensors(t.index)
        q = ft.Quantization()
        assert t.name == ft.Name().decode() and list(t.shape) == ft.ShapeAsNumpy().tolist()
        assert t.dtype == DTYPES[ft.Type()] and t.buffer == ft.Buffer()
        assert list(t.scales) == (q.ScaleAsNumpy().tolist() if q and q.ScaleLength() else [])
        assert list(t.zero_points) == (q.ZeroPointAsNumpy().tolist() if q and q.ZeroPointLength() else [])
        assert t.data_bytes == fb.Buffers(t.buffer).DataLength()
    for op in m.operators:
        fo = g.Operators(op.index)
        assert op.opcode_index == fo.OpcodeIndex()
        assert list(op.inputs) == fo.InputsAsNumpy().tolist() and list(op.outputs) == fo.OutputsAsNumpy().tolist()
    assert [t.index for t in m.inputs] == g.InputsAsNumpy().tolist()
    assert [t.index for t in m.outputs] == g.OutputsAsNumpy().tolist()


def test_op_and_dtype_tables_match_the_schema():
    schema = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")
    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    assert BUILTIN_OPS == tuple(ops[i] for i in range(len(ops)))
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    assert DTYPES == types
    assert set(RESOLVER_METHODS) <= set(BUILTIN_OPS)


def test_resolver_method_refuses_ops_without_a_kernel():
    assert resolver_method("CONV_2D") == "AddConv2D"
    with pytest.raises(ConversionError, match="LSTM"):
        resolver_method("LSTM")


def _expect_invalid(data: bytes, name: str | None = None) -> ModelError:
    with pytest.raises(ModelError) as info:
        read_tflite(data, name=name)
    return info.value


def test_messages_name_the_file_and_say_what_to_do(tmp_path):
    bad = tmp_path / "model_int8.tflite"
    bad.write_bytes(TINY.read_bytes()[:1000])
    with pytest.raises(ModelError) as info:
        read_tflite(bad)
    err = info.value
    assert str(bad) in err.message and "is not a valid TFLite model" in err.message
    assert "facemask-edge convert" in err.hint
    assert "\n" not in str(err)
    assert "not a valid TFLite model: the file is empty" in _expect_invalid(b"").message
    assert "TFL3" in _expect_invalid(b"PK\x03\x04" + bytes(100)).message
    with pytest.raises(ModelError, match="not found"):
        read_tflite(tmp_path / "missing.tflite")
    with pytest.raises(ModelError, match="cannot read"):
        read_tflite(tmp_path)
    with pytest.raises(ModelError, match="ref.tflite is not a valid"):
        read_tflite(b"junk", name="ref.tflite", hint="pass another reference")


# --- Valid flatbuffers that are not usable models --------------------------------------------
# A minimal flatbuffer builder, just enough to write the tables this reader checks.


class _Builder:
    """Writes tables and vectors back to front, like flatbuffers does (no vtable sharing)."""

    def __init__(self):
        self.buf = bytearray()

    def _prepend(self, b: bytes) -> int:
        assert len(b) % 4 == 0  # every piece is padded, so every position stays 4-aligned
        self.buf[0:0] = b
        return len(self.buf)  # position measured from the end

    def vector(self, fmt: str, values) -> int:
        body = struct.pack(f"<{len(values)}{fmt}", *values)
        return self._prepend(struct.pack("<I", len(values)) + body + bytes((-len(body)) % 4))

    def string(self, s: str) -> int:
        b = s.encode()
        return self._prepend(struct.pack("<I", len(b)) + b + b"\0" + bytes((-(len(b) + 1)) % 4))

    def offsets(self, refs) -> int:
        # Each element is an offset from its own position; positions count from the end.
        end = len(self.buf) + 4 + 4 * len(refs)
        elems = b"".join(struct.pack("<I", (end - 4 - 4 * i) - r) for i, r in enumerate(refs))
        return self._prepend(struct.pack("<I", len(refs)) + elems)

    def table(self, fields: list) -> int:
        """``fields``: per field index, None, ("<fmt>", value) for a scalar, or ("off", ref)."""
        inline, slots = b"", []
        layout = []
        for f in fields:
            if f is None:
                slots.append(0)
                continue
            size = 4 if f[0] == "off" else struct.calcsize("<" + f[0])
            layout.append((f, 4 + len(inline)))
            slots.append(4 + len(inline))
            inline += bytes(size) + bytes((-size) % 4)
        table_size = 4 + len(inline)
        # Table at end-relative position p = len(buf) + table_size; offsets resolve from it.
        p = len(self.buf) + table_size
        body = bytearray(inline)
        for f, off in layout:
            if f[0] == "off":
                field_pos = p - off  # end-relative
                struct.pack_into("<I", body, off - 4, field_pos - f[1])
            else:
                struct.pack_into("<" + f[0], body, off - 4, f[1])
        vtable = struct.pack(f"<HH{len(slots)}H", 4 + 2 * len(slots), table_size, *slots)
        vt_size = len(vtable) + (-len(vtable)) % 4
        # The vtable goes right before the table: soffset = table - vtable = vt_size.
        pos = self._prepend(struct.pack("<i", vt_size) + bytes(body))
        self._prepend(vtable + bytes((-len(vtable)) % 4))
        return pos

    def finish(self, root: int) -> bytes:
        end = len(self.buf) + 8
        return struct.pack("<I", end - root) + b"TFL3" + bytes(self.buf)


def _model(*, version=3, opcode_index=0, op_inputs=(0,), op_outputs=(1,), sub_inputs=(0,),
           sub_outputs=(1,), tensor_buffer=0, subgraphs=True, shape=(1, 4), out_shape=None,
           code=BUILTIN_OPS.index("RELU"), scales=None, zero_points=None) -> bytes:
    b = _Builder()
    buffers = b.offsets([b.table([]), b.table([])])
    tensors = []
    for i in range(2):
        q = None
        if scales is not None and i == 0:
            q = b.table([None, None, ("off", b.vector("f", scales)),
                         ("off", b.vector("q", [0] * len(scales) if zero_points is None
                                          else zero_points))])
        name = b.string(f"t{i}")
        sh = b.vector("i", out_shape if i == 1 and out_shape is not None else shape)
        tensors.append(b.table([("off", sh), ("b", 9), ("I", tensor_buffer), ("off", name),
                                ("off", q) if q else None]))
    tensors_v = b.offsets(tensors)
    op = b.table([("I", opcode_index), ("off", b.vector("i", op_inputs)),
                  ("off", b.vector("i", op_outputs))])
    ops_v = b.offsets([op])
    sg = b.table([("off", tensors_v), ("off", b.vector("i", sub_inputs)),
                  ("off", b.vector("i", sub_outputs)), ("off", ops_v)])
    sgs = b.offsets([sg] if subgraphs else [])
    code_t = b.table([("b", min(code, 127)), None, ("i", 1), ("i", code)])
    codes = b.offsets([code_t])
    root = b.table([("I", version), ("off", codes), ("off", sgs), None, ("off", buffers)])
    return b.finish(root)


def test_builder_makes_a_model_the_reader_and_tflite_bindings_accept():
    m = read_tflite(_model())
    assert m.op_names == ("RELU",) and m.inputs[0].shape == (1, 4) and m.inputs[0].dtype == "int8"
    schema = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")
    fb = schema.Model.GetRootAs(_model(), 0)
    assert fb.Subgraphs(0).Tensors(1).Name() == b"t1" and fb.OperatorCodes(0).BuiltinCode() == 19


@pytest.mark.parametrize("kwargs, words", [
    (dict(subgraphs=False), "no subgraphs"),
    (dict(version=2), "schema version 2"),
    (dict(opcode_index=1), "operator code refers to entry 1 of 1"),
    (dict(op_inputs=(0, 7)), "tensor refers to entry 7 of 2"),
    (dict(op_outputs=(-2,)), "tensor refers to entry -2"),
    (dict(sub_inputs=(2,)), "input refers to entry 2 of 2"),
    (dict(sub_outputs=()), "no inputs or no outputs"),
    (dict(tensor_buffer=5), "buffer refers to entry 5 of 2"),
    (dict(shape=(1, -4)), "shape [1, -4]"),
    (dict(code=250), "builtin operator 250"),
    (dict(scales=(0.5, 0.25, 0.1)), "3 scales for dimension 0"),
    # What TFLM's kernels take for granted (each of these crashed the TFLM runtime in a fuzz).
    (dict(op_inputs=(-1,)), "(RELU) lacks its first input"),
    (dict(op_outputs=(-1,)), "lacks its first input or an output"),
    (dict(out_shape=(1, 5)), "(RELU) changes the shape"),
    (dict(code=BUILTIN_OPS.index("CONV_2D")), "(CONV_2D) has no options"),
    (dict(scales=(0.5,), zero_points=()), "1 scales but 0 zero points"),
    (dict(scales=(0.0,)), "scale that is not a positive number"),
    (dict(scales=(float("nan"),)), "scale that is not a positive number"),
    (dict(scales=(0.5,), zero_points=(1000,)), "zero point outside"),
])
def test_valid_flatbuffers_that_are_not_usable_models(kwargs, words):
    assert words in _expect_invalid(_model(**kwargs)).message


def test_absurd_vector_length_is_refused_before_allocating():
    data = bytearray(TINY.read_bytes())
    m = read_tflite(bytes(data))
    # Find the main subgraph's tensor vector length and claim 2**32 - 1 tensors.
    count = struct.pack("<I", len(m.tensors))
    pos = data.find(count)
    while pos >= 0:
        trial = bytearray(data)
        trial[pos:pos + 4] = b"\xff\xff\xff\xff"
        try:
            read_tflite(bytes(trial))
        except ModelError as exc:
            if "claims 4,294,967,295 entries" in exc.message:
                return
        pos = data.find(count, pos + 1)
    pytest.fail("no length field gave the 'claims ... entries' refusal")


# --- Fuzz ------------------------------------------------------------------------------------


def _check_outcome(data: bytes, what: str) -> bool:
    """Read ``data``; True if accepted (then every derived figure must compute), False if refused
    with the one expected error. Anything else fails the test with a reproducible description."""
    try:
        m = read_tflite(data)
    except ModelError as exc:
        assert "not a valid TFLite model" in exc.message, f"{what}: {exc}"
        assert exc.hint, what
        return False
    except Exception as exc:  # noqa: BLE001 - the point of the fuzz
        where = traceback.extract_tb(exc.__traceback__)[-1]
        pytest.fail(f"{what}: {type(exc).__name__}: {exc} at {where.name}:{where.lineno}")
    assert isinstance(m, TfliteModel)
    m.macs, m.params, m.op_versions(), m.op_uses, m.used_codes, m.unused_codes, m.custom_ops
    for op in m.operators:
        m.layer_name(op)
    return True


def _fuzz(seed_models: list[bytes], seconds: float, seed: int) -> dict:
    rng = random.Random(seed)
    stats = {"runs": 0, "accepted": 0}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = bytearray(rng.choice(seed_models))
        kind = rng.randrange(5)
        if kind == 0:  # a few random bytes
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 1:  # a 32-bit word set to a boundary value (offsets, lengths, indices)
            pos = rng.randrange(len(data) - 4) & ~3
            data[pos:pos + 4] = struct.pack("<I", rng.choice(
                [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, len(data), len(data) - 4, rng.randrange(1 << 32)]))
        elif kind == 2:  # cut a range out, or duplicate one
            a = rng.randrange(len(data))
            b = min(len(data), a + rng.randint(1, 64))
            data = data[:a] + data[b:] if rng.random() < 0.5 else data[:b] + data[a:]
        elif kind == 3:  # truncate and mutate
            data = data[:rng.randrange(len(data))]
            if len(data) > 8:
                data[rng.randrange(8, len(data))] ^= 1 << rng.randrange(8)
        else:  # random bytes, half of them with a TFL3 header and a root offset in range
            n = rng.randint(0, 512)
            data = bytearray(rng.getrandbits(8) for _ in range(n))
            if n >= 12 and rng.random() < 0.5:
                data[0:8] = struct.pack("<I", rng.randrange(8, n - 3)) + b"TFL3"
        stats["accepted"] += _check_outcome(bytes(data), f"seed {seed} run {stats['runs']} kind {kind}")
        stats["runs"] += 1
    return stats


def test_truncation_at_every_offset_is_one_model_error():
    data = TINY.read_bytes()
    for n in range(len(data)):
        assert not _check_outcome(data[:n], f"tiny model cut to {n} bytes"), n


def test_fuzz_tiny_model():
    seed = int(os.environ.get("FACEMASK_EDGE_FUZZ_SEED", time.time_ns() % 100000))
    stats = _fuzz([TINY.read_bytes()], FUZZ_SECONDS * 0.6, seed)
    print(f"tflite fuzz (tiny, seed {seed}): {stats}")
    assert stats["runs"] > 100


def test_fuzz_vww_reference():
    data = _vww()
    seed = int(os.environ.get("FACEMASK_EDGE_FUZZ_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)
    deadline = time.monotonic() + FUZZ_SECONDS * 0.4
    cuts = 0
    while time.monotonic() < deadline and cuts < 200:  # truncations at random offsets
        n = rng.randrange(len(data))
        assert not _check_outcome(data[:n], f"vww cut to {n} bytes (seed {seed})")
        cuts += 1
    stats = _fuzz([data], max(0.0, deadline - time.monotonic()), seed)
    print(f"tflite fuzz (vww, seed {seed}): {cuts} truncations, {stats}")
    assert cuts > 10
