"""The transfer model: a MobileNet backbone (flat, not nested) with a pooling/dropout/softmax head.

The model takes ``pixel / 255`` in [0, 1]. A backbone that expects other input (Keras' ImageNet
MobileNets want [-1, 1]) has that normalization folded into its first convolution's weights: no
extra ops, and after int8 conversion the firmware only feeds ``pixel - 128``. Backbone layers sit directly in the model's graph (no
nested ``Model``), which tensorflow-model-optimization's QAT needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facemask_edge._tf import keras
from facemask_edge.errors import ModelError

__all__ = ["ARCHS", "BOARD_ARCHS", "ModelSpec", "build_model", "backbone_layer_names", "check_weights_available"]

ARCHS = ("mobilenet_v1", "mobilenet_v2", "vgg16", "densenet201")
# Architectures that can ever fit a microcontroller; the others are for host-side comparison.
BOARD_ARCHS = ("mobilenet_v1", "mobilenet_v2")

# What Keras' ImageNet backbones expect, as an affine map of our [0, 1] input:
# backbone channel c sees scale[c] * x[perm[c]] + offset[c]. Folded into the first convolution.
_INPUT_AFFINE = {
    "tf": ((2.0, 2.0, 2.0), (-1.0, -1.0, -1.0), (0, 1, 2)),  # [-1, 1]
    "caffe": ((255.0, 255.0, 255.0), (-103.939, -116.779, -123.68), (2, 1, 0)),  # BGR - mean
    "torch": ((1 / 0.229, 1 / 0.224, 1 / 0.225),
              (-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225), (0, 1, 2)),
}


HEADS = ("avg", "spatial")


@dataclass
class ModelSpec:
    """Everything that defines the network (stored in ``config.json``)."""

    arch: str = "mobilenet_v1"
    alpha: float = 0.25
    size: int = 96
    color: str = "rgb"
    weights: str = "none"  # "imagenet", "none", or a path to a Keras model file
    blocks: int | None = None  # keep only the first N depthwise-separable blocks
    cut: str | None = None  # or cut at this layer name
    skip_blocks: tuple[int, ...] = ()  # drop these stride-1 blocks (1-based), e.g. (3, 5)
    dropout: float = 0.2
    num_classes: int = 2
    head: str = "avg"  # "avg": pool the map, 1x1 conv; "spatial": one conv over the whole map

    @property
    def channels(self) -> int:
        return 1 if self.color == "grayscale" else 3


# Where Keras downloads ImageNet weights from, and how it names the cached files (tf_keras'
# applications/mobilenet*.py): checked before any work so that offline the failure is immediate.
_WEIGHTS_HOST = "storage.googleapis.com"


def _imagenet_file(arch: str, alpha: float, size: int) -> str | None:
    if arch == "mobilenet_v1":
        rows = size if size in (128, 160, 192, 224) else 224
        text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0"}.get(alpha, "2_5")
        return f"mobilenet_{text}_{rows}_tf_no_top.h5"
    if arch == "mobilenet_v2":
        rows = size if size in (96, 128, 160, 192, 224) else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    return None


def _keras_homes() -> list[Path]:
    """Where tf_keras keeps downloads: ~/.keras, or /tmp/.keras when home is not writable."""
    import os

    homes = [Path(os.environ["KERAS_HOME"])] if os.environ.get("KERAS_HOME") else []
    return homes + [Path("~/.keras").expanduser(), Path("/tmp/.keras")]


def check_weights_available(weights: str, arch: str = "mobilenet_v1", alpha: float = 0.25,
                            size: int = 96, timeout: float = 3.0) -> None:
    """Fail at once, in one line, if ``weights`` cannot be had: a missing file, or ImageNet
    weights neither in Keras' cache nor downloadable (offline).

    Called by the commands before they import TensorFlow or read data, so an offline machine
    hears about it in a fraction of a second instead of after the data stage and the import.

    Raises:
        ModelError: the weights are not available; the hint names the alternatives.
    """
    import socket

    if weights in ("none", "", None):
        return
    if weights != "imagenet":
        if not Path(weights).expanduser().is_file():
            raise ModelError(f"weights file {weights} does not exist",
                             "use --weights imagenet, --weights none, or a path to a Keras model file")
        return
    name = _imagenet_file(arch, alpha, size)
    if name and any((h / "models" / name).is_file() for h in _keras_homes()):
        return
    try:
        socket.create_connection((_WEIGHTS_HOST, 443), timeout=timeout).close()
    except OSError as exc:
        raise ModelError(
            f"ImageNet weights for {arch} are not in Keras' cache and {_WEIGHTS_HOST} is not reachable "
            f"({exc.strerror or type(exc).__name__})",
            "offline? use --weights PATH to a Keras model file (e.g. "
            "../shared/weights/mobilenet_v1_025_imagenet.h5) or --weights none") from None


def _applications_backbone(spec: ModelSpec, weights: str | None):
    k = keras()
    shape = (spec.size, spec.size, 3)
    try:
        if spec.arch == "mobilenet_v1":
            return k.applications.MobileNet(input_shape=shape, alpha=spec.alpha, include_top=False,
                                            weights=weights), _INPUT_AFFINE["tf"]
        if spec.arch == "mobilenet_v2":
            return k.applications.MobileNetV2(input_shape=shape, alpha=spec.alpha, include_top=False,
                                              weights=weights), _INPUT_AFFINE["tf"]
        if spec.arch == "vgg16":
            return k.applications.VGG16(input_shape=shape, include_top=False,
                                        weights=weights), _INPUT_AFFINE["caffe"]
        if spec.arch == "densenet201":
            return k.applications.DenseNet201(input_shape=shape, include_top=False,
                                              weights=weights), _INPUT_AFFINE["torch"]
    except ValueError as exc:
        raise ModelError(f"cannot build {spec.arch} (alpha {spec.alpha}, {spec.size} px): {exc}",
                         "check --alpha/--size against the architecture") from None
    except Exception as exc:  # download failures surface as several exception types
        if weights == "imagenet":
            raise ModelError(
                f"could not download ImageNet weights for {spec.arch} ({type(exc).__name__})",
                "offline? use --weights PATH to a Keras model file (e.g. "
                "../shared/weights/mobilenet_v1_025_imagenet.h5) or --weights none") from None
        raise
    raise ModelError(f"unknown architecture {spec.arch!r}", f"use one of {', '.join(ARCHS)}")


def _pooling_cut(model) -> str:
    """Name of the layer whose output is the last feature map before the model's pooling."""
    k = keras()
    pools = (k.layers.GlobalAveragePooling2D, k.layers.AveragePooling2D,
             k.layers.GlobalMaxPooling2D, k.layers.MaxPooling2D)
    for layer in reversed(model.layers):
        if isinstance(layer, pools) and len(layer.output.shape) in (2, 4):
            inbound = layer.inbound_nodes[0].inbound_layers
            inbound = inbound[0] if isinstance(inbound, list) else inbound
            return inbound.name
    # No pooling: the last 4-D output is the feature map.
    for layer in reversed(model.layers):
        if len(layer.output.shape) == 4:
            return layer.name
    raise ModelError(f"{model.name} has no 4-D feature map to use as a backbone")


def _blocks_cut(model, blocks: int) -> str:
    """Name of the last layer of the first ``blocks`` depthwise-separable blocks (MobileNetV1)."""
    k = keras()
    layers = model.layers
    dw = [i for i, layer in enumerate(layers) if isinstance(layer, k.layers.DepthwiseConv2D)]
    if blocks < 1 or blocks > len(dw):
        raise ModelError(f"--blocks {blocks} is out of range: the backbone has {len(dw)} "
                         "depthwise-separable blocks", f"use 1..{len(dw)}")
    if blocks == len(dw):
        return _pooling_cut(model)
    i = dw[blocks] - 1
    while isinstance(layers[i], k.layers.ZeroPadding2D):
        i -= 1
    return layers[i].name


def _block_layers(model, skip) -> set[str]:
    """Names of the layers of the depthwise-separable blocks ``skip`` (1-based), to bypass.

    A block runs from its depthwise convolution to the layer before the next block (a stride-2
    block's ZeroPadding2D belongs to it). Only blocks that keep the shape (stride 1, as many
    output channels as input) can be dropped: the next block's weights still fit.
    """
    k = keras()
    layers = model.layers
    dw = [i for i, layer in enumerate(layers) if isinstance(layer, k.layers.DepthwiseConv2D)]
    names: set[str] = set()
    for b in skip:
        if b < 1 or b > len(dw):
            raise ModelError(f"--skip-blocks {b} is out of range: the backbone has {len(dw)} blocks",
                             f"use 1..{len(dw)}")
        start, end = dw[b - 1], (dw[b] if b < len(dw) else len(layers))
        while end - 1 > start and isinstance(layers[end - 1], k.layers.ZeroPadding2D):
            end -= 1
        block = layers[start:end]
        if b == 1 or isinstance(layers[start - 1], k.layers.ZeroPadding2D) or \
                tuple(layers[start].strides) != (1, 1) or \
                tuple(block[0].input.shape[1:]) != tuple(block[-1].output.shape[1:]):
            raise ModelError(f"block {b} changes the feature map's shape and cannot be skipped",
                             "skip only stride-1 blocks that keep the channel count "
                             "(MobileNetV1: 3, 5, 7-11, 13)")
        names.update(layer.name for layer in block)
    return names


def _load_backbone_file(path: Path):
    k = keras()
    if not path.exists():
        raise ModelError(f"weights file {path} does not exist",
                         "use --weights imagenet, --weights none, or a path to a Keras model file")
    try:
        return k.models.load_model(path, compile=False)
    except Exception as exc:
        raise ModelError(f"cannot load {path} as a Keras model ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120]})",
                         "pass a tf_keras .h5/.keras model file") from None


def _fold_affine(kernel, bias, bn, affine):
    """Fold ``x' = scale * x[perm] + offset`` into a conv kernel (and its bias or the next BN).

    ``conv(W, x')`` equals ``conv(W', x) + shift`` with ``W'[.., perm[c], :] = scale[c] W[.., c, :]``
    and ``shift = sum offset[c] W[.., c, :]``; the shift goes into the bias, or into the
    following BatchNormalization's moving mean when the conv has no bias. Exact away from the
    zero-padded border, which fine-tuning absorbs.
    """
    import numpy as np

    scale, offset, perm = (np.array(v) for v in affine)
    new = np.zeros_like(kernel)
    for c in range(kernel.shape[2]):
        new[:, :, perm[c], :] += scale[c] * kernel[:, :, c, :]
    shift = np.einsum("hwco,c->o", kernel, offset)
    if bias is not None:
        return new, bias + shift, bn
    gamma_beta_mean_var = list(bn)
    mean_index = len(gamma_beta_mean_var) - 2
    gamma_beta_mean_var[mean_index] = gamma_beta_mean_var[mean_index] - shift
    return new, None, gamma_beta_mean_var


def _rebuild(sub, size: int, channels: int, input_tensor, affine=None, bypass=frozenset()):
    """Re-create ``sub``'s layers on a new input (other size or channel count), keeping weights.

    Each layer is re-made from its config and called on the mapped inputs, so the layers sit
    flat in the new model's graph; layers named in ``bypass`` pass their input through. The first
    convolution of an RGB backbone used on grayscale input gets its kernel summed over the colour
    axis: the same response to a gray image.
    """
    k = keras()
    tensors = {sub.layers[0].name: input_tensor}
    weights = {layer.name: layer.get_weights() for layer in sub.layers}
    clones = {}
    for layer in sub.layers[1:]:
        inbound = layer.inbound_nodes[0].inbound_layers
        inbound = inbound if isinstance(inbound, list) else [inbound]
        args = [tensors[il.name] for il in inbound]
        if layer.name in bypass:
            tensors[layer.name] = args[0]
            continue
        clone = layer.__class__.from_config(layer.get_config())
        tensors[layer.name] = clone(args[0] if len(args) == 1 else args)
        clones[layer.name] = clone
    convs = [layer for layer in sub.layers if isinstance(layer, k.layers.Conv2D)]
    if convs:
        first = convs[0]
        w = weights[first.name]
        nxt = [n for n in sub.layers if n.inbound_nodes and first in
               (n.inbound_nodes[0].inbound_layers if isinstance(n.inbound_nodes[0].inbound_layers,
                                                                list)
                else [n.inbound_nodes[0].inbound_layers])]
        bn = nxt[0] if nxt and isinstance(nxt[0], k.layers.BatchNormalization) else None
        kernel, bias = w[0], (w[1] if len(w) > 1 else None)
        if affine is not None:
            if bias is None and bn is None:
                raise ModelError(f"cannot fold input normalization into {first.name}")
            kernel, bias, bn_w = _fold_affine(kernel, bias, weights[bn.name] if bn else None, affine)
            if bn is not None:
                weights[bn.name] = bn_w
        if channels == 1 and kernel.shape[2] == 3:
            kernel = kernel.sum(axis=2, keepdims=True)
        weights[first.name] = [kernel] + ([bias] if bias is not None else [])
    for name, clone in clones.items():
        if weights[name]:
            try:
                clone.set_weights(weights[name])
            except ValueError:
                raise ModelError(f"cannot reuse weights of layer {name} at {size} px, "
                                 f"{channels} channel(s)") from None
    return tensors[sub.layers[-1].name]


def build_model(spec: ModelSpec):
    """Build the transfer model.

    Returns:
        ``(model, backbone_names)``: a flat functional tf_keras model taking ``(size, size, C)``
        in [0, 1] and giving softmax over the classes, and the names of its backbone layers.
    """
    k = keras()
    if spec.arch not in ARCHS:
        raise ModelError(f"unknown architecture {spec.arch!r}", f"use one of {', '.join(ARCHS)}")
    if spec.color not in ("rgb", "grayscale"):
        raise ModelError(f"unknown colour {spec.color!r}", "use rgb or grayscale")
    if spec.weights in ("imagenet", "none", None, ""):
        src, rescale = _applications_backbone(spec, "imagenet" if spec.weights == "imagenet" else None)
    else:
        src = _load_backbone_file(Path(spec.weights).expanduser())
        rescale = None  # a model file is expected to take [0, 1], as vww_96.h5 does
    cut = spec.cut or (_blocks_cut(src, spec.blocks) if spec.blocks else _pooling_cut(src))
    try:
        feat = src.get_layer(cut).output
    except ValueError:
        raise ModelError(f"layer {cut!r} not found in the backbone",
                         "list the layer names with a Keras model summary") from None
    sub = k.Model(src.inputs, feat, name="backbone")
    inp = k.Input((spec.size, spec.size, spec.channels), name="image")
    bypass = _block_layers(sub, spec.skip_blocks) if spec.skip_blocks else set()
    features = _rebuild(sub, spec.size, spec.channels, inp, rescale, bypass)
    names = [layer.name for layer in sub.layers[1:] if layer.name not in bypass]
    # Head: average pooling over the whole map (AVERAGE_POOL_2D, which keeps its input scale,
    # rather than MEAN, which requantizes), then a 1x1 convolution as the classifier (CONV_2D +
    # RESHAPE + SOFTMAX, as TFLM's person-detection model ends) rather than a Dense layer:
    # int8 FULLY_CONNECTED rounds differently in TFLite's reference kernels and in tflite-micro
    # (1 LSB on about 1 % of facemask-dev test images), while CONV_2D agrees bit for bit.
    # head "spatial" keeps where on the face a feature is (a mask covers the lower half): one
    # convolution as large as the feature map (Flatten + Dense, as CONV_2D), for small maps.
    h, w = features.shape[1], features.shape[2]
    if spec.head not in HEADS:
        raise ModelError(f"unknown head {spec.head!r}", f"use one of {', '.join(HEADS)}")
    if spec.head == "spatial":
        y = k.layers.Dropout(spec.dropout, name="dropout")(features)
        y = k.layers.Conv2D(spec.num_classes, (h, w), padding="valid", name="classes")(y)
    else:
        y = k.layers.AveragePooling2D(pool_size=(h, w), name="pool")(features)
        y = k.layers.Dropout(spec.dropout, name="dropout")(y)
        y = k.layers.Conv2D(spec.num_classes, 1, name="classes")(y)
    # Flatten, not Reshape((n,)): Keras' Reshape keeps the batch axis dynamic, which TFLite turns
    # into SHAPE + STRIDED_SLICE + PACK before the RESHAPE; Flatten gives one constant RESHAPE.
    y = k.layers.Flatten(name="logits")(y)
    out = k.layers.Softmax(name="probs")(y)
    model = k.Model(inp, out, name=f"facemask_{spec.arch}")
    return model, names


def backbone_layer_names(model) -> list[str]:
    """Names of the layers between the input (and normalization) and the head."""
    head = {"image", "pool", "flatten", "dropout", "classes", "logits", "probs"}
    return [layer.name for layer in model.layers if layer.name not in head]
