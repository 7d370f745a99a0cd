"""``facemask-edge qat``."""

from __future__ import annotations

import click

from facemask_edge.cli._common import echo_json_summary, field_option, run_dir_argument
from facemask_edge.pipeline.config import PipelineConfig
from facemask_edge.train.trainer import TrainConfig

__all__ = ["qat"]


@click.command()
@run_dir_argument()
# The pipeline's qat_epochs/qat_lr and training's batch_size: one default for both commands.
@field_option(PipelineConfig, "qat_epochs", cli="--epochs", help="Quantization-aware training epochs at most.")
@field_option(PipelineConfig, "qat_lr", cli="--lr")
@field_option(TrainConfig, "batch_size")
def qat(run_dir, qat_epochs, qat_lr, batch_size):
    """Quantization-aware fine-tuning of RUN_DIR's model into model_qat.h5."""
    from facemask_edge.train.qat import qat as run_qat

    result = run_qat(run_dir, epochs=qat_epochs, lr=qat_lr, batch_size=batch_size)
    echo_json_summary(f"QAT model saved in {run_dir}/model_qat.h5", {
        "val accuracy before": result["val_accuracy_before"],
        "val accuracy after": result["val_accuracy"],
        "epochs": result["epochs"],
        "seconds": result["seconds"],
    })
