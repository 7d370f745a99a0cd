"""``facemask-edge qat``."""

from __future__ import annotations

import click

from facemask_edge.cli._common import echo_json_summary, run_dir_argument

__all__ = ["qat"]


@click.command()
@run_dir_argument()
@click.option("--epochs", type=int, default=5, show_default=True, help="QAT epochs at most.")
@click.option("--lr", type=float, default=5e-5, show_default=True, help="Learning rate.")
@click.option("--batch-size", type=int, default=32, show_default=True)
def qat(run_dir, epochs, lr, batch_size):
    """Quantization-aware fine-tuning of RUN_DIR's model into model_qat.h5."""
    from facemask_edge.train.qat import qat as run_qat

    result = run_qat(run_dir, epochs=epochs, lr=lr, batch_size=batch_size)
    echo_json_summary(f"QAT model saved in {run_dir}/model_qat.h5", {
        "val accuracy before": result["val_accuracy_before"],
        "val accuracy after": result["val_accuracy"],
        "epochs": result["epochs"],
        "seconds": result["seconds"],
    })
