"""Quantization-aware training with tensorflow-model-optimization (tf_keras).

The float model is flattened first (a nested base model breaks ``quantize_model``), every layer
the default 8-bit scheme supports is annotated, and the wrapped model is fine-tuned briefly at a
low learning rate on the run's train split, keeping the best epoch by validation.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from facemask_edge.errors import ModelError
from facemask_edge.progress import log

__all__ = ["qat", "flatten_model", "load_qat_model", "quantize_scope"]

HOST_ONLY = ("vgg16", "densenet201")
# The defaults of `facemask-edge qat` and of the pipeline's qat_epochs/qat_lr (one home: the
# pipeline's fields point here). A few epochs at a small rate: QAT only adapts the trained
# weights to int8 rounding.
QAT_EPOCHS = 3
QAT_LR = 5e-5


def flatten_model(model):
    """Return a functional model whose layers are all top-level (nested models inlined)."""
    from facemask_edge._tf import keras

    k = keras()
    if not any(isinstance(layer, k.Model) for layer in model.layers):
        return model
    tensors = {}

    def call(m, inputs):
        for layer in m.layers:
            if isinstance(layer, k.layers.InputLayer):
                continue
            inbound = layer.inbound_nodes[-1].inbound_layers if len(layer.inbound_nodes) else []
            inbound = inbound if isinstance(inbound, list) else [inbound]
            args = [tensors[(id(m), il.name)] if (id(m), il.name) in tensors else inputs
                    for il in inbound]
            if isinstance(layer, k.Model):
                out = call(layer, args[0])
            else:
                clone = layer.__class__.from_config(layer.get_config())
                out = clone(args[0] if len(args) == 1 else args)
                clone.set_weights(layer.get_weights())
            tensors[(id(m), layer.name)] = out
        return tensors[(id(m), m.layers[-1].name)]

    inp = k.Input(model.input_shape[1:], name=model.layers[0].name)
    return k.Model(inp, call(model, inp), name=model.name)


def quantize_scope():
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras.quantize_scope()


def _annotate(model):
    """Annotate the layers the default 8-bit registry supports; leave the rest (e.g. Rescaling)."""
    import tensorflow_model_optimization as tfmot

    from facemask_edge._tf import keras

    q = tfmot.quantization.keras
    registry = q.default_8bit.Default8BitQuantizeRegistry()

    k = keras()

    def annotate(layer):
        # BatchNormalization is not in the registry but the default scheme's transforms fold it
        # into the preceding convolution when it is annotated; unannotated it stays MUL + ADD.
        if registry.supports(layer) or isinstance(layer, k.layers.BatchNormalization):
            return q.quantize_annotate_layer(layer)
        return layer

    return k.models.clone_model(model, clone_function=annotate)


def load_qat_model(path: Path):
    from facemask_edge._tf import keras

    with quantize_scope():
        return keras().models.load_model(path, compile=False)


def qat(run_dir: Path, epochs: int = QAT_EPOCHS, lr: float = QAT_LR, batch_size: int = 32,
        patience: int = 3) -> dict:
    """Quantization-aware fine-tuning of ``RUN_DIR/model.keras`` into ``RUN_DIR/model_qat.h5``.

    Returns:
        ``{"val_accuracy": ..., "epochs": ..., "seconds": ...}`` (also in ``qat.json``).

    Raises:
        ModelError: the architecture cannot be quantized for a board.
    """
    from facemask_edge.artifacts.files import write_json
    from facemask_edge.artifacts.run import FLOAT_MODEL, QAT_MODEL, QAT_RECORD, SPLIT, Run
    from facemask_edge.train.trainer import BestWeights, make_dataset

    run = Run(run_dir)
    run_dir = run.path
    cfg = run.config  # not a trained run: say so before importing TensorFlow
    import tensorflow_model_optimization as tfmot

    from facemask_edge._tf import keras

    k = keras()
    if cfg["arch"] in HOST_ONLY:
        raise ModelError(f"{cfg['arch']} is a host-only comparison model and is not quantized for "
                         "the boards", "train --arch mobilenet_v1 or mobilenet_v2 for a board")
    data = run.data()
    t0 = time.monotonic()
    float_sha = run.sha256(FLOAT_MODEL)  # what the QAT model is made from (before any reading)
    model = flatten_model(run.float_model())
    try:
        qmodel = tfmot.quantization.keras.quantize_apply(_annotate(model))
    except Exception as exc:
        raise ModelError(f"cannot wrap {cfg['arch']} for quantization-aware training: "
                         f"{str(exc).splitlines()[0][:160]}",
                         "use mobilenet_v1/mobilenet_v2, or convert with --no-qat") from None
    _pin_input_range(qmodel)
    xtr, ytr = data.part("train")
    xva, yva = data.part("val")
    nc = len(data.classes)
    train_ds = make_dataset(xtr, ytr, nc, batch_size, True, cfg["seed"], cfg.get("augment", True))
    val_ds = make_dataset(xva, yva, nc, batch_size)
    qmodel.compile(k.optimizers.Adam(lr), loss=k.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    before = qmodel.evaluate(val_ds, verbose=0)[1]
    log(f"QAT: {len(qmodel.layers)} layers wrapped; validation accuracy before {before:.4f}; "
        f"up to {epochs} epochs")
    best = BestWeights(patience, "qat")
    hist = qmodel.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, callbacks=[best])
    _pin_input_range(qmodel)
    # HDF5: tf_keras' native format cannot load tfmot's wrappers back (variable count mismatch).
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qmodel.save(run.file(QAT_MODEL))
    run.record(QAT_MODEL, {FLOAT_MODEL: float_sha, SPLIT: run.sha256(SPLIT)})
    result = {"val_accuracy_before": float(before),
              "val_accuracy": float(best.best[1]) if best.best_epoch >= 0 else float(before),
              "best_epoch": best.best_epoch + 1,
              "epochs": len(hist.history.get("loss", [])), "lr": lr,
              "seconds": round(time.monotonic() - t0, 1)}
    write_json(run.file(QAT_RECORD), result)
    return result


def _pin_input_range(qmodel) -> None:
    """Fix the input quantizer's range to [0, 1], so int8 input is exactly ``pixel - 128``."""
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import (
        QuantizeLayer as qlayer)
    pinned = 0
    for layer in qmodel.layers:
        if isinstance(layer, qlayer):
            for var in layer.weights:
                short = var.name.split("/")[-1].split(":")[0]
                if short.endswith("_min"):
                    var.assign(np.float32(0.0))
                    pinned += 1
                elif short.endswith("_max"):
                    var.assign(np.float32(1.0))
                    pinned += 1
    if pinned < 2:
        raise ModelError("QAT model has no input quantizer to pin to [0, 1]")
