"""A tiny model end to end: train, QAT, convert, int8 runtimes, evaluate, profile."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facemask_edge.errors import BudgetError, ConversionError

pytestmark = pytest.mark.slow


def test_train_writes_the_run_folder(tiny_trained_run):
    run = tiny_trained_run
    for name in ("model.keras", "labels.txt", "split.json", "config.json", "metrics.json",
                 "confusion_matrix.png", "training_curves.png", "manifest.json", "skipped.txt"):
        assert (run / name).exists(), name
    m = json.loads((run / "metrics.json").read_text())
    for key in ("accuracy", "f1", "precision", "recall"):
        assert 0.0 <= m["test"][key] <= 1.0
    assert m["test_images"] == len(json.loads((run / "split.json").read_text())["test"]) > 0
    assert set(m["test"]["per_class"]) == {"with_mask", "without_mask"}
    assert (run / "labels.txt").read_text() == "with_mask\nwithout_mask\n"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["size"] == 32 and cfg["arch"] == "mobilenet_v1" and cfg["weights"].endswith("tiny.h5")
    # stage 1 then stage 2, and the model learned something on the training set
    assert m["epochs"]["feature_extractor"] >= 1 and m["epochs"]["fine_tune"] >= 1
    assert max(m["history"]["accuracy"]) > 0.75


def test_convert_gives_full_int8_with_exact_input_quantization(tiny_run):
    from facemask_edge.convert.compat import incompatibilities
    from facemask_edge.convert.runtimes import measure_arena
    from facemask_edge.artifacts.tflite import read_tflite

    data = (tiny_run / "model_int8.tflite").read_bytes()
    info = read_tflite(data)
    tin, tout = info.inputs[0], info.outputs[0]
    assert tin.dtype == tout.dtype == "int8"
    assert tin.scale == pytest.approx(1 / 255, abs=1e-9) and tin.zero_point == -128
    assert incompatibilities(info) == []
    card = json.loads((tiny_run / "model_card.json").read_text())
    assert card["arena_bytes"] == measure_arena(data)["total"]
    assert card["flatbuffer_bytes"] == len(data) and card["labels"] == ["with_mask", "without_mask"]
    assert card["macs"] == sum(layer["macs"] for layer in card["layers"]) > 0
    assert {o["name"] for o in card["ops"]} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "RESHAPE", "SOFTMAX"}
    # The head is a 1x1 conv and one constant reshape: no FULLY_CONNECTED, no dynamic-shape ops.
    assert {o["name"] for o in card["ops"]} == {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "RESHAPE",
                                               "SOFTMAX"}
    assert "tensorflow" in card["versions"] and len(card["sha256"]) == 64


def test_tflm_and_tflite_reference_agree(tiny_run):
    from facemask_edge.convert.runtimes import TFLiteRefRunner, TFLMRunner

    rng = np.random.RandomState(0)
    xs = rng.randint(-128, 128, size=(20, 32, 32, 3)).astype(np.int8)
    a = TFLMRunner(tiny_run / "model_int8.tflite").run_batch(xs)
    b = TFLiteRefRunner(tiny_run / "model_int8.tflite").run_batch(xs)
    assert a.shape == (20, 2)
    assert (a == b).all()  # bit for bit, every score of every image


def test_qat_then_convert_and_evaluate_side_by_side(tiny_run):
    from facemask_edge.convert.converter import convert_run
    from facemask_edge.convert.evaluate import evaluate_run
    from facemask_edge.train.qat import qat

    result = qat(tiny_run, epochs=1)
    assert (tiny_run / "model_qat.h5").exists() and 0 <= result["val_accuracy"] <= 1
    convert_run(tiny_run, quantization="qat")
    card = json.loads((tiny_run / "model_card.json").read_text())
    assert card["quantization"] == "qat"
    assert {o["name"] for o in card["ops"]}.isdisjoint({"MUL", "ADD", "DEQUANTIZE"})  # BN folded
    report = evaluate_run(tiny_run)
    assert set(report["variants"]) == {"ptq", "qat"}
    assert report["shipped"]["quantization"] == "qat" and report["variants"]["qat"]["shipped"]
    # TFLM and TFLite's reference kernels agree exactly, PTQ and QAT alike.
    ptq, qat_ = report["variants"]["ptq"], report["shipped"]
    for e in (ptq, qat_):
        assert e["runtimes_label_agreement"] == 1.0 and e["runtimes_max_score_diff"] == 0
        assert e["runtimes_bit_exact_rate"] == 1.0
    for e in (ptq, qat_):
        assert abs(e["tflm"]["accuracy"] - e["tflite_ref"]["accuracy"]) <= 0.1
    assert (tiny_run / "evaluation" / "evaluation.md").read_text().count("| shipped (qat) int8 |") == 3
    assert (tiny_run / "evaluation" / "confusion_shipped_tflm.png").stat().st_size > 1000
    assert (tiny_run / "evaluation" / "confusion_variant_ptq_tflm.png").stat().st_size > 1000


def _float_model_bytes(with_resize: bool) -> bytes:
    from facemask_edge._tf import keras, tf

    k = keras()
    inp = k.Input((16, 16, 3))
    x = k.layers.Conv2D(4, 3, name="conv")(inp)
    if with_resize:
        x = k.layers.UpSampling2D(interpolation="bilinear", name="upsample")(x)
    out = k.layers.Dense(2, name="head")(k.layers.GlobalAveragePooling2D()(x))
    conv = tf().lite.TFLiteConverter.from_keras_model(k.Model(inp, out))
    return conv.convert()


def test_float_ops_are_refused_naming_the_layer():
    from facemask_edge.convert.compat import check_compatible, incompatibilities
    from facemask_edge.artifacts.tflite import read_tflite

    info = read_tflite(_float_model_bytes(True))
    problems = incompatibilities(info)
    assert any("RESIZE_BILINEAR" in p and "'upsample'" in p and "float32" in p for p in problems)
    with pytest.raises(ConversionError, match=r"op 0 CONV_2D \(from layer 'conv'\).*\(\+\d+ more\)"):
        check_compatible(info)


def test_float_io_quantize_is_refused():
    from facemask_edge._tf import keras, tf
    from facemask_edge.convert.compat import incompatibilities
    from facemask_edge.artifacts.tflite import read_tflite

    k = keras()
    inp = k.Input((8, 8, 3))
    out = k.layers.Dense(2, name="head")(k.layers.Flatten()(k.layers.Conv2D(2, 3, name="c")(inp)))
    conv = tf().lite.TFLiteConverter.from_keras_model(k.Model(inp, out))
    conv.optimizations = [tf().lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([np.random.rand(1, 8, 8, 3).astype(np.float32)]
                                           for _ in range(4))
    problems = incompatibilities(read_tflite(conv.convert()))  # float input and output kept
    assert any("QUANTIZE" in p and "float input" in p for p in problems)
    assert any("DEQUANTIZE" in p for p in problems)


def test_wrong_input_range_is_refused():
    from facemask_edge._tf import keras
    from facemask_edge.convert.converter import check_input_quantization, convert_keras
    from facemask_edge.artifacts.tflite import read_tflite

    k = keras()
    inp = k.Input((8, 8, 3))
    model = k.Model(inp, k.layers.Dense(2)(k.layers.Flatten()(k.layers.Conv2D(2, 3)(inp))))
    data = convert_keras(model, lambda: ([np.random.rand(1, 8, 8, 3).astype(np.float32) * 2]
                                         for _ in range(8)))
    with pytest.raises(ConversionError, match="scale 1/255"):
        check_input_quantization(read_tflite(data))


def test_unquantizable_host_only_arch_gets_a_message(tmp_path):
    from facemask_edge.errors import ModelError
    from facemask_edge.train.qat import qat

    (tmp_path / "config.json").write_text(json.dumps({"arch": "vgg16", "data": str(tmp_path),
                                                      "size": 32, "color": "rgb"}))
    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(ModelError, match="vgg16 is a host-only"):
        qat(tmp_path)


def test_profile_fits_and_too_big(tiny_run, tmp_path, capsys):
    from facemask_edge._tf import keras
    from facemask_edge.convert.converter import convert_keras
    from facemask_edge.profile import profile_model

    p = profile_model(tiny_run / "model_int8.tflite", "nano33ble")
    assert p["fits"] and p["arena_with_margin_bytes"] >= p["arena_bytes"] + 2048
    assert p["latency_ms"][0] < p["latency_ms"][1] and p["flash_bytes"] > 0
    # 160x160x64 int8 activations: far more than the Nano's RAM
    k = keras()
    inp = k.Input((160, 160, 3))
    x = k.layers.Conv2D(64, 3, padding="same")(inp)
    x = k.layers.Conv2D(64, 3, padding="same")(x)
    big = convert_keras(k.Model(inp, k.layers.Dense(2)(k.layers.GlobalAveragePooling2D()(x))),
                        lambda: ([np.random.rand(1, 160, 160, 3).astype(np.float32)] for _ in range(2)))
    p = profile_model(big, "nano33ble")
    assert not p["fits"] and "exceeds" in p["reason"]
    from facemask_edge.cli import main

    path = tmp_path / "big.tflite"
    path.write_bytes(big)
    assert main(["profile", str(path), "--board", "nano33ble"]) == BudgetError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: big.tflite does not fit nano33ble: arena")


def test_distillation_targets_mix_labels_and_teacher(tiny_trained_run, synthetic_data):
    from facemask_edge.artifacts.run import Run
    from facemask_edge.train.trainer import teacher_targets

    rd = Run(tiny_trained_run).data()
    idx = rd.split["train"][:10]
    t = teacher_targets(tiny_trained_run, str(synthetic_data), [rd.paths[i] for i in idx],
                        rd.labels[idx], 2, alpha=0.6, temperature=2.0)
    assert t.shape == (10, 2) and np.allclose(t.sum(axis=1), 1.0)
    true = t[np.arange(10), rd.labels[idx]]
    assert (true >= 0.6).all() and (true <= 1.0).all()  # the true label keeps at least alpha
    assert not np.allclose(t, np.eye(2)[rd.labels[idx]])  # and the teacher adds its view
    # An ensemble averages its teachers: the same teacher twice is that teacher.
    twice = teacher_targets([str(tiny_trained_run)] * 2, str(synthetic_data), [rd.paths[i] for i in idx],
                            rd.labels[idx], 2, alpha=0.6, temperature=2.0)
    np.testing.assert_allclose(twice, t, atol=1e-6)


def test_a_teacher_that_saw_the_students_held_out_images_is_refused(tiny_trained_run, synthetic_data):
    """A teacher trained on another split has seen some of the student's validation or test
    images: distilling from it would leak them, so it is refused. A teacher of the same split
    (same validation set, same test set) is fine."""
    from facemask_edge.artifacts.run import Run
    from facemask_edge.errors import FacemaskError
    from facemask_edge.train.trainer import teacher_targets

    rd = Run(tiny_trained_run).data()
    idx = rd.split["train"][:4]
    args = (tiny_trained_run, str(synthetic_data), [rd.paths[i] for i in idx], rd.labels[idx], 2, 0.5, 2.0)
    own = {part: [rd.paths[i] for i in rd.split[part]] for part in ("val", "test")}
    assert teacher_targets(*args, held_out=own).shape == (4, 2)
    train_img, val_img = rd.paths[rd.split["train"][-1]], rd.paths[rd.split["val"][-1]]
    for student_part, leaked in (("val", train_img), ("test", train_img), ("test", val_img)):
        student = {part: list(paths) for part, paths in own.items()}
        student[student_part].append(leaked)
        with pytest.raises(FacemaskError, match=r"trained or chose its epoch on 1 of this run's held-out") as exc:
            teacher_targets(*args, held_out=student)
        assert leaked in str(exc.value) and "--seed" in exc.value.hint


def test_select_best_uses_validation_not_test(tiny_run):
    from facemask_edge.convert.converter import convert_run

    sel = convert_run(tiny_run, representative=20)  # "best" is the default
    card = json.loads((tiny_run / "model_card.json").read_text())
    assert card["selection"] == sel and sel["selected"] in sel["validation"] and sel["rule"] == "best"
    assert set(sel["validation"]) == {"ptq", "qat"}  # the QAT test above trained one
    for stats in sel["validation"].values():
        assert 0 <= stats["label_agreement_with_float"] <= 1 and stats["mean_score_diff"] >= 0
    assert (tiny_run / "model_int8.tflite").read_bytes() == \
        (tiny_run / f"model_int8_{sel['selected']}.tflite").read_bytes()


def _backbone_with_a_skippable_block(path):
    """conv, block 1 (8->16), block 2 (16->16, stride 1: skippable), block 3 (16->32, stride 2)."""
    from facemask_edge._tf import keras

    k = keras()
    L = k.layers
    inp = k.Input((32, 32, 3))
    x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inp)))
    for filters, stride in ((16, 1), (16, 1), (32, 2)):
        if stride == 2:
            x = L.ZeroPadding2D(((0, 1), (0, 1)))(x)
        x = L.DepthwiseConv2D(3, strides=stride, padding="same" if stride == 1 else "valid", use_bias=False)(x)
        x = L.ReLU(6.0)(L.BatchNormalization()(x))
        x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(filters, 1, use_bias=False)(x)))
    out = L.Dense(2, activation="softmax")(L.GlobalAveragePooling2D()(x))
    k.Model(inp, out).save(path)
    return path


def test_skip_blocks_drops_only_shape_keeping_blocks(tmp_path):
    from facemask_edge._tf import keras
    from facemask_edge.errors import ModelError
    from facemask_edge.train.model import ModelSpec, build_model

    src = _backbone_with_a_skippable_block(tmp_path / "bb.h5")
    k = keras()
    full, _ = build_model(ModelSpec(size=32, weights=str(src)))
    cut, names = build_model(ModelSpec(size=32, weights=str(src), skip_blocks=(2,)))
    dws = [la for la in cut.layers if isinstance(la, k.layers.DepthwiseConv2D)]
    assert len(dws) == 2 and len([la for la in full.layers if isinstance(la, k.layers.DepthwiseConv2D)]) == 3
    assert cut.count_params() < full.count_params() and set(names) <= {la.name for la in cut.layers}
    # The blocks kept keep their pretrained weights: the last depthwise kernel is the source's.
    source = k.models.load_model(src, compile=False)
    last = [la for la in source.layers if isinstance(la, k.layers.DepthwiseConv2D)][-1]
    np.testing.assert_array_equal(dws[-1].get_weights()[0], last.get_weights()[0])
    for bad, msg in (((1,), "cannot be skipped"), ((3,), "cannot be skipped"), ((9,), "out of range")):
        with pytest.raises(ModelError, match=msg):
            build_model(ModelSpec(size=32, weights=str(src), skip_blocks=bad))


def test_spatial_head_is_one_conv_over_the_map_and_runtimes_agree(tiny_backbone, tmp_path):
    from facemask_edge._tf import keras
    from facemask_edge.convert.converter import convert_keras
    from facemask_edge.convert.runtimes import TFLiteRefRunner, TFLMRunner
    from facemask_edge.artifacts.tflite import read_tflite
    from facemask_edge.errors import ModelError
    from facemask_edge.train.model import ModelSpec, build_model

    k = keras()
    model, _ = build_model(ModelSpec(size=32, weights=str(tiny_backbone), head="spatial"))
    classes = model.get_layer("classes")
    fmap = classes.input.shape[1:3]
    assert tuple(classes.kernel_size) == tuple(fmap) and fmap[0] > 1  # as large as the feature map
    assert not any(isinstance(la, k.layers.AveragePooling2D) for la in model.layers)
    assert model.output.shape[1:] == (2,)
    rng = np.random.RandomState(1)
    xs = rng.randint(0, 256, size=(40, 32, 32, 3)).astype(np.float32)

    def rep():
        for x in xs[:20]:
            yield [x[None] / 255.0]

    data = convert_keras(model, rep)
    ops = set(read_tflite(data).op_names)
    assert ops == {"CONV_2D", "DEPTHWISE_CONV_2D", "RESHAPE", "SOFTMAX"}
    q = (xs - 128).astype(np.int8)
    assert (TFLMRunner(data).run_batch(q) == TFLiteRefRunner(data).run_batch(q)).all()
    with pytest.raises(ModelError, match="unknown head"):
        build_model(ModelSpec(size=32, weights=str(tiny_backbone), head="max"))
