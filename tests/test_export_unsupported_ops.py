"""Export refuses, with one clear line, a model whose ops the board's TFLM library cannot register."""

from __future__ import annotations

import pytest

from facemask_edge.cli import main as cli_main
from facemask_edge.errors import ConversionError
from facemask_edge.export import export_run

# Building a model with BATCH_MATMUL needs TensorFlow: the slow tier.
pytestmark = [pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning"),
              pytest.mark.slow]


def _convert(build, size: int, channels: int, seed: int, samples: int = 8) -> bytes:
    """Full-int8 conversion with the toolkit's converter (int8 input scale 1/255, zero point -128)."""
    import numpy as np

    from facemask_edge.convert.converter import convert_keras

    rng = np.random.default_rng(seed)

    def representative():
        for _ in range(samples):
            yield [rng.random((1, size, size, channels), dtype=np.float32)]

    return convert_keras(build(), representative)


@pytest.fixture(scope="module")
def matmul_run(tmp_path_factory):
    """A real int8 model with a BATCH_MATMUL between two activations (a Gram matrix)."""
    pytest.importorskip("tensorflow")
    from test_export import make_run

    from facemask_edge._tf import keras, tf

    K, T = keras(), tf()

    def build():
        i = K.Input((8, 8, 3))
        x = K.layers.Conv2D(4, 1, activation="relu")(i)
        x = K.layers.Reshape((64, 4))(x)
        x = K.layers.Lambda(lambda t: T.linalg.matmul(t, t, transpose_a=True))(x)  # 4x4 Gram matrix
        x = K.layers.Flatten()(x)
        return K.Model(i, K.layers.Dense(2, activation="softmax")(x))

    model = _convert(build, 8, 3, 0)
    run = make_run(tmp_path_factory.mktemp("mm"), model, ["with_mask", "without_mask"], "rgb")
    from facemask_edge.artifacts.tflite import read_tflite

    assert "BATCH_MATMUL" in read_tflite(model).op_names
    return run


def test_nano_refuses_batch_matmul(matmul_run, tmp_path):
    with pytest.raises(ConversionError, match="BATCH_MATMUL.*AddBatchMatMul"):
        export_run(matmul_run, "nano33ble", out=tmp_path)
    assert not (tmp_path / "nano33ble").exists()


def test_esp32_exports_batch_matmul(matmul_run, tmp_path):
    result = export_run(matmul_run, "esp32cam", out=tmp_path)
    assert "AddBatchMatMul" in (result.path / "src" / "model_ops.h").read_text()


def test_cli_refusal_is_one_line(matmul_run, tmp_path, capsys):
    rc = cli_main(["export", str(matmul_run), "--board", "nano33ble", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0
    assert err.startswith("error: the model uses BATCH_MATMUL") and err.count("\n") == 1
    assert "Traceback" not in err
