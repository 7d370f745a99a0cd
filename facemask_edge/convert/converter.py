"""Full-int8 conversion of a run, with checks and a model card.

``convert_run`` turns ``model_qat.h5`` (quantization-aware) and/or ``model.keras`` (post-training
quantization with a representative set from the train split) into int8 variants and ships one as
``model_int8.tflite`` (by default the one most faithful to the float model on validation, the
same rule as the pipeline's): int8 input and output, every op int8, input scale exactly 1/255 and
zero point -128 so the firmware feeds ``pixel - 128``. It checks every op against TFLM's kernels
and writes each model's card; the run's provenance records what each variant was made from.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from facemask_edge.convert.compat import check_compatible
from facemask_edge.convert.runtimes import measure_arena
from facemask_edge.artifacts.tflite import TfliteModel, read_tflite
from facemask_edge.errors import ConversionError, ModelError
from facemask_edge.progress import log, ticking

__all__ = ["convert_keras", "convert_run", "convert_variant", "fidelity", "model_card",
           "check_input_quantization", "QUANTIZATIONS", "BEST_RULE",
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
        with ticking("converting to int8"), quiet_native(), warnings.catch_warnings():
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
    from facemask_edge._tf import library_versions

    return library_versions()


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


QUANTIZATIONS = ("best", "ptq", "qat")

#: How ``best`` chooses, in the words the card and the log use.
BEST_RULE = ("fidelity to the float model on the validation split (label agreement, then mean "
             "score difference; ties go to PTQ), in TFLM")


def convert_run(run_dir: Path, quantization: str = "best", representative: int = 300,
                variants: list[str] | None = None, keep_other_variants: bool = True) -> dict:
    """Convert a trained run to int8 variants and ship one as ``model_int8.tflite``.

    Each variant is written as ``model_int8_<kind>.tflite`` with ``model_card_<kind>.json`` and
    recorded in the run's provenance (PTQ is made from ``model.keras``, QAT from
    ``model_qat.h5``); the chosen one is copied to ``model_int8.tflite`` with
    ``model_card.json``, whose ``selection`` says which and why.

    ``best`` (the default, the pipeline's rule too) ships the variant most faithful to the float
    model on the **validation** split: most images where the int8 label equals the float label,
    then the smallest mean score difference (int8 dequantized vs float softmax); ties go to PTQ,
    the simpler one. This measures what quantization should preserve, the float model's
    behaviour; the test split is never looked at.

    Args:
        run_dir: the run folder.
        quantization: ``best``, ``ptq`` or ``qat``.
        representative: calibration images from the train split (PTQ; QAT uses up to 50).
        variants: the variants to convert (default: for ``best`` PTQ and, if the run has a QAT
            model, QAT; else the one asked for). If ``quantization`` names a variant not among
            them, the last one is shipped.
        keep_other_variants: False: remove variant files of kinds not converted now.

    Returns:
        The ``selection`` record (also in ``model_card.json``): ``selected``, ``rule``, ``by``
        and per variant its ``validation`` figures.

    Raises:
        ConversionError: QAT asked for without a QAT model, or the conversion failed.
        ModelError: the QAT model was made from an earlier float model (stale).
    """
    from facemask_edge.artifacts.run import KINDS, QAT_MODEL, Run, variant_model

    run = Run(run_dir)
    cfg = run.config
    if quantization not in QUANTIZATIONS:
        raise ConversionError(f"unknown quantization {quantization!r}", f"use one of {', '.join(QUANTIZATIONS)}")
    has_qat = run.exists(QAT_MODEL)
    if variants is None:
        variants = (["ptq"] + (["qat"] if has_qat else [])) if quantization == "best" else [quantization]
    if "qat" in variants:
        if not has_qat:
            raise ConversionError(f"{run.file(QAT_MODEL)} not found",
                                  f"run facemask-edge qat {run.path} first, or convert with --ptq")
        run.check_fresh(QAT_MODEL)
    if cfg["arch"] in _host_only():
        raise ModelError(f"{cfg['arch']} is a host-only comparison model; it never fits a board",
                         "train --arch mobilenet_v1 or mobilenet_v2 to convert for a board")
    for kind in KINDS:
        if kind not in variants and run.exists(variant_model(kind)):
            why = None if keep_other_variants else "not asked for"
            why = why or run.stale(variant_model(kind))
            if why:
                log(f"removing the {kind.upper()} variant ({why})")
                run.remove_variant(kind)
    models = {kind: convert_variant(run, kind, representative) for kind in variants}
    stats = fidelity(run, models)
    if quantization == "best":
        chosen = max(variants, key=lambda k: (stats[k]["label_agreement_with_float"],
                                              -stats[k]["mean_score_diff"], k == "ptq")) if stats else "ptq"
        by = BEST_RULE if stats else "no validation images: PTQ, the simpler one"
    elif quantization in variants:
        chosen, by = quantization, f"asked for ({quantization})"
    else:
        chosen, by = variants[-1], f"{quantization} was not converted; {variants[-1]} is the only variant"
    selection = {"selected": chosen, "rule": quantization, "by": by, "validation": stats}
    shipped = run.install(chosen, selection)
    log(f"shipped {chosen.upper()} ({by})" + ("".join(
        f"; {k}: agreement with float {v['label_agreement_with_float']:.4f}, score diff "
        f"{v['mean_score_diff']:.4f}, accuracy {v['accuracy']:.4f}" for k, v in stats.items())
        if stats else ""))
    log(f"shipping model_int8_{chosen}.tflite as model_int8.tflite ({chosen.upper()}, {len(shipped.data)} bytes); "
        f"arena {shipped.card['arena_bytes']} bytes, {shipped.card['macs']:,} MACs")
    return selection


def _host_only():
    from facemask_edge.train.qat import HOST_ONLY

    return HOST_ONLY


def fidelity(run, models: dict) -> dict[str, dict]:
    """Per variant on the validation split: label agreement with the float model, mean score
    difference (dequantized int8 vs float softmax) and accuracy, in TFLM (``{}`` without
    validation images)."""
    from facemask_edge.convert.evaluate import int8_predictions
    from facemask_edge.metrics import classification_metrics

    data = run.data()
    xv, yv = data.part("val")
    if not len(xv):
        return {}
    pf = run.float_model().predict(xv.astype(np.float32) / 255.0, batch_size=128, verbose=0)
    stats = {}
    for kind, m in models.items():
        q = int8_predictions(m.data, xv).astype(np.float32)
        out = m.card["output"]
        probs = (q - out["zero_point"]) * out["scale"]
        stats[kind] = {"label_agreement_with_float": float((q.argmax(1) == pf.argmax(1)).mean()),
                       "mean_score_diff": float(np.abs(probs - pf).mean()),
                       "accuracy": classification_metrics(yv, q.argmax(1), data.classes)["accuracy"],
                       "images": int(len(xv))}
    return stats


def convert_variant(run, kind: str, representative: int = 300):
    """Convert one variant (``ptq``: ``model.keras`` with a representative set; ``qat``:
    ``model_qat.h5``) into ``model_int8_<kind>.tflite`` and its card, recorded with its inputs.

    Returns:
        The variant (:class:`~facemask_edge.artifacts.run.ModelFile`).
    """
    from facemask_edge._tf import seed_everything
    from facemask_edge.artifacts.run import FLOAT_MODEL, QAT_MODEL, SPLIT
    from facemask_edge.train.qat import load_qat_model

    t0 = time.monotonic()
    cfg = run.config
    reproducibility = seed_everything(cfg.get("seed", 0))
    source = QAT_MODEL if kind == "qat" else FLOAT_MODEL
    # Hash the inputs before reading them: a file replaced meanwhile makes this variant stale.
    inputs = {source: run.sha256(source), SPLIT: run.sha256(SPLIT)}
    if kind == "qat":
        inputs[FLOAT_MODEL] = run.sha256(FLOAT_MODEL)  # the card's parameter count comes from it
    float_model = run.float_model()
    model = load_qat_model(run.file(QAT_MODEL)) if kind == "qat" else float_model
    # QAT models carry their ranges; the set still calibrates any layer QAT left unwrapped.
    data = run.data()
    rep = _representative(data.part("train")[0], representative if kind == "ptq" else min(
        representative, 50), cfg.get("seed", 0))
    log(f"converting {'QAT' if kind == 'qat' else 'float (post-training quantization)'} model to full int8")
    tflite = convert_keras(model, rep)
    info = read_tflite(tflite, name="the converted model", hint=_OWN_OUTPUT_HINT)
    check_input_quantization(info)
    check_compatible(info)
    card = model_card(tflite, run.labels, cfg["color"], kind, run.path, int(float_model.count_params()))
    card["convert_seconds"] = round(time.monotonic() - t0, 1)
    card["reproducibility"] = reproducibility
    log(f"wrote model_int8_{kind}.tflite ({kind.upper()}): {len(tflite)} bytes, arena "
        f"{card['arena_bytes']} bytes, {card['macs']:,} MACs ({card['convert_seconds']} s)")
    return run.write_variant(kind, tflite, card, inputs)
