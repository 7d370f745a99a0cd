"""Full-int8 conversion of a run, with checks and a model card.

``convert_run`` turns ``model_qat.h5`` (quantization-aware) or ``model.keras`` (post-training
quantization with a representative set from the train split) into ``model_int8.tflite``: int8
input and output, every op int8, input scale exactly 1/255 and zero point -128 so the firmware
feeds ``pixel - 128``. It checks every op against TFLM's kernels and writes ``model_card.json``.
"""

from __future__ import annotations

import hashlib
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from facemask_edge.convert.compat import check_compatible
from facemask_edge.convert.runtimes import measure_arena
from facemask_edge.artifacts.tflite import TfliteModel, read_tflite
from facemask_edge.errors import ConversionError, ModelError
from facemask_edge.progress import log

__all__ = ["convert_keras", "convert_run", "select_best", "model_card", "check_input_quantization",
           "INPUT_SCALE", "INPUT_ZERO_POINT"]

INPUT_SCALE = 1.0 / 255.0
INPUT_ZERO_POINT = -128
# The converter's own output refused by the reader is a bug, not a user's mistake.
_OWN_OUTPUT_HINT = "report it: the TFLite converter wrote a model the reader refuses"


def _representative(images: np.ndarray, n: int, seed: int):
    """Calibration batches: ``n`` train images as the float model sees them (pixel / 255).

    The first sample also holds a 0 and a 1 pixel, so the calibrated input range is exactly
    [0, 1] (scale 1/255, zero point -128) whatever the images' own extremes.
    """
    rng = np.random.RandomState(seed)
    idx = rng.choice(len(images), size=min(n, len(images)), replace=False)

    def gen():
        for j, i in enumerate(idx):
            x = images[i].astype(np.float32)[None] / 255.0
            if j == 0:
                x = x.copy()
                x.flat[0], x.flat[-1] = 0.0, 1.0
            yield [x]

    return gen


def convert_keras(model, representative=None) -> bytes:
    """Convert a tf_keras model (QAT-wrapped, or float with a representative set) to full int8."""
    from facemask_edge._tf import tf

    T = tf()
    conv = T.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [T.lite.Optimize.DEFAULT]
    if representative is not None:
        conv.representative_dataset = representative
    conv.target_spec.supported_ops = [T.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = T.int8
    conv.inference_output_type = T.int8
    import warnings

    from facemask_edge._tf import quiet_native

    try:
        # The converter prints "fully_quantize: 0, inference_type: 6 ..." from C++ and warns
        # "Statistics for quantized inputs were expected" (the int8 input's statistics come from
        # the representative set); both are noise here and are replayed only on failure.
        with quiet_native(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            return bytes(conv.convert())
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        detail = next((m for m in msg if "error" in m.lower()), msg[0] if msg else type(exc).__name__)
        raise ConversionError(f"TFLite conversion failed: {detail[:300]}",
                              "every layer must be quantizable to int8 (see --verbose)") from exc


def check_input_quantization(info: TfliteModel) -> None:
    """Fail unless the input is int8 with scale 1/255 and zero point -128."""
    t = info.inputs[0]
    if t.dtype != "int8" or t.scale is None or t.zero_point is None:
        raise ConversionError(f"model input is {t.dtype} without int8 quantization")
    scale, zp = t.scale, t.zero_point
    if abs(scale - INPUT_SCALE) > 1e-9 or zp != INPUT_ZERO_POINT:
        raise ConversionError(
            f"input quantization is scale {scale:.8g}, zero point {zp}; the firmware needs "
            f"scale 1/255 ({INPUT_SCALE:.8g}) and zero point -128",
            "the float model must take pixel/255 in [0, 1]")


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("facemask-edge", "tensorflow", "tf_keras", "tensorflow-model-optimization",
                "tflite-micro", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def model_card(data: bytes, labels: list[str], color: str, quantization: str,
               run_dir: Path | None, keras_params: int | None = None,
               arena: dict | None = None) -> dict:
    """Describe an int8 model: I/O quantization, ops and versions, size, MACs, arena, hashes."""
    info = read_tflite(data, name="the converted model", hint=_OWN_OUTPUT_HINT)
    tin, tout = info.inputs[0], info.outputs[0]
    arena = arena or measure_arena(data)
    return {
        "schema": 1,
        "model": "model_int8.tflite",
        "sha256": hashlib.sha256(data).hexdigest(),
        "flatbuffer_bytes": len(data),
        "quantization": quantization,
        "input": {"shape": list(tin.shape), "dtype": tin.dtype, "scale": tin.scale,
                  "zero_point": tin.zero_point, "size": tin.shape[1], "color": color},
        "output": {"shape": list(tout.shape), "dtype": tout.dtype, "scale": tout.scale,
                   "zero_point": tout.zero_point},
        "labels": labels,
        "ops": info.op_versions(),
        "params": keras_params if keras_params is not None else info.params,
        "weights_elements": info.params,
        "macs": info.macs,
        "layers": [{"index": op.index, "op": op.name, "layer": info.layer_name(op),
                    "output_shape": list(info.tensors[op.outputs[0]].shape)
                    if op.outputs and op.outputs[0] >= 0 else [],
                    "macs": op.macs} for op in info.operators],
        "arena_bytes": arena["total"],
        "arena_detail": arena,
        "arena_note": "measured by tflite-micro's RecordingMicroAllocator on the 64-bit host; "
                      "32-bit boards need slightly less for the same model",
        "run": str(run_dir) if run_dir else None,
        "versions": _versions(),
        **_licence(run_dir),
    }


def _licence(run_dir: Path | None) -> dict:
    """``licence_notes``: set when the run learned from a non-commercial source (``mfn_*``)."""
    from facemask_edge.data.sources import run_licence_notes

    notes = run_licence_notes(run_dir) if run_dir else []
    return {"licence_notes": notes, "noncommercial": True} if notes else {}


def select_best(run_dir: Path, representative: int = 300) -> dict:
    """Convert both PTQ and QAT variants and install the int8 model most faithful to the float
    model on the **validation** split, in tflite-micro.

    Faithful = most images where the int8 label equals the float label, then the smallest mean
    score difference (int8 dequantized vs float softmax); ties go to PTQ, the simpler one. This
    measures what quantization should preserve, the float model's behaviour, rather than a
    few-image accuracy difference on labels. The test split is never looked at. Returns the
    ``"selection"`` record also written to ``model_card.json``.
    """
    from facemask_edge._tf import keras
    from facemask_edge.convert.runtimes import TFLMRunner
    from facemask_edge.data.preprocess import to_int8
    from facemask_edge.runs import load_run_data, read_json, write_json

    run_dir = Path(run_dir)
    kinds = ["ptq"] + (["qat"] if (run_dir / "model_qat.h5").exists() else [])
    data = load_run_data(run_dir)
    xv, yv = data.part("val")
    float_model = keras().models.load_model(run_dir / "model.keras", compile=False)
    pf = float_model.predict(xv.astype(np.float32) / 255.0, batch_size=128, verbose=0)
    stats = {}
    for kind in kinds:
        convert_run(run_dir, qat=(kind == "qat"), representative=representative)
        runner = TFLMRunner(run_dir / f"model_int8_{kind}.tflite")
        q = runner.run_batch(to_int8(xv)).astype(np.float32)
        qp = runner.output["quantization_parameters"]
        probs = (q - qp["zero_points"][0]) * qp["scales"][0]
        stats[kind] = {"label_agreement_with_float": float((q.argmax(1) == pf.argmax(1)).mean()),
                       "mean_score_diff": float(np.abs(probs - pf).mean()),
                       "accuracy": float((q.argmax(1) == yv).mean())}
    best = max(kinds, key=lambda k: (stats[k]["label_agreement_with_float"],
                                     -stats[k]["mean_score_diff"], k == "ptq"))
    card = read_json(run_dir / f"model_card_{best}.json")
    card["model"] = "model_int8.tflite"
    card["selection"] = {"selected": best, "by": "fidelity to the float model on the validation "
                         "split (label agreement, then mean score difference), in TFLM",
                         "validation": stats}
    (run_dir / "model_int8.tflite").write_bytes((run_dir / f"model_int8_{best}.tflite").read_bytes())
    write_json(run_dir / "model_card.json", card)
    log(f"selected {best.upper()}: " + "; ".join(
        f"{k} agreement {v['label_agreement_with_float']:.4f}, score diff {v['mean_score_diff']:.4f}, "
        f"accuracy {v['accuracy']:.4f}" for k, v in stats.items()))
    return card["selection"]


def convert_run(run_dir: Path, qat: bool | None = None, representative: int = 300) -> Path:
    """Convert a trained run to ``model_int8.tflite`` with ``labels.txt`` and ``model_card.json``.

    Args:
        run_dir: the run folder.
        qat: True: use ``model_qat.h5`` (error if missing); False: post-training quantization
            of ``model.keras``; None: QAT when it exists, else PTQ.
        representative: calibration images from the train split (PTQ).

    Returns:
        Path of ``model_int8.tflite``. The variant is also kept as ``model_int8_qat.tflite`` or
        ``model_int8_ptq.tflite`` with its card, so both can be compared.
    """
    from facemask_edge._tf import keras
    from facemask_edge.runs import load_config, load_labels, load_run_data, write_json
    from facemask_edge.train.qat import HOST_ONLY, load_qat_model

    run_dir = Path(run_dir)
    t0 = time.monotonic()
    cfg = load_config(run_dir)
    if cfg["arch"] in HOST_ONLY:
        raise ModelError(f"{cfg['arch']} is a host-only comparison model; it never fits a board",
                         "train --arch mobilenet_v1 or mobilenet_v2 to convert for a board")
    qat_path = run_dir / "model_qat.h5"
    if qat is None:
        qat = qat_path.exists()
    labels = load_labels(run_dir)
    if qat:
        if not qat_path.exists():
            raise ConversionError(f"{qat_path} not found",
                                  f"run facemask-edge qat {run_dir} first, or convert with --no-qat")
        model = load_qat_model(qat_path)
        kind = "qat"
    else:
        model = keras().models.load_model(run_dir / "model.keras", compile=False)
        kind = "ptq"
    # QAT models carry their ranges; the set still calibrates any layer QAT left unwrapped.
    data = load_run_data(run_dir)
    rep = _representative(data.part("train")[0], representative if not qat else min(
        representative, 50), cfg.get("seed", 0))
    log(f"converting {'QAT' if qat else 'float (post-training quantization)'} model to full int8")
    tflite = convert_keras(model, rep)
    info = read_tflite(tflite, name="the converted model", hint=_OWN_OUTPUT_HINT)
    check_input_quantization(info)
    check_compatible(info)
    params = int(keras().models.load_model(run_dir / "model.keras", compile=False).count_params()) \
        if qat else int(model.count_params())
    card = model_card(tflite, labels, cfg["color"], kind, run_dir, params)
    card["model"] = f"model_int8_{kind}.tflite"
    card["convert_seconds"] = round(time.monotonic() - t0, 1)
    (run_dir / f"model_int8_{kind}.tflite").write_bytes(tflite)
    write_json(run_dir / f"model_card_{kind}.json", card)
    card["model"] = "model_int8.tflite"
    (run_dir / "model_int8.tflite").write_bytes(tflite)
    write_json(run_dir / "model_card.json", card)
    log(f"wrote {run_dir / 'model_int8.tflite'}: {len(tflite)} bytes, arena {card['arena_bytes']} "
        f"bytes, {card['macs']:,} MACs ({card['convert_seconds']} s)")
    return run_dir / "model_int8.tflite"
