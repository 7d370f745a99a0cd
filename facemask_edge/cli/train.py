"""``facemask-edge train``."""

from __future__ import annotations

import click

from facemask_edge.cli._common import data_value, echo_json_summary, field_option, teachers

__all__ = ["train", "train_field_options"]


# Every option is a TrainConfig field: type, allowed values, help and default come from there.
_FIELDS = ("arch", "alpha", "size", "color", "weights", "blocks", "cut", "skip_blocks", "head", "split",
           "group_by", "near_duplicates", "exclude_noncommercial", "class_weight", "seed", "val_fraction", "test_fraction",
           "batch_size", "head_epochs", "finetune_epochs",
           "head_lr", "finetune_lr", "finetune_layers", "patience", "dropout", "label_smoothing",
           "augment", "camera_augment", "train_bn", "teacher", "distill_alpha", "distill_temperature", "distribute",
           "wandb", "energy")


def train_field_options(names=_FIELDS, layered: bool = False, board_defaults: dict | None = None):
    """Decorator: the options of TrainConfig fields ``names`` (in this order in --help)."""
    from facemask_edge.train.trainer import TrainConfig

    def apply(fn):
        for name in reversed(names):
            extra = {"teacher": {"type": click.Path(file_okay=False, exists=True), "multiple": True, "default": ()},
                     # Repeatable: several roots merged by class folder name (see data_value).
                     "data": {"required": True, "default": None, "multiple": True},
                     "out": {"required": True, "default": None, "type": click.Path(file_okay=False)},
                     }.get(name, {})
            fn = field_option(TrainConfig, name, layered=layered,
                              board_defaults=(board_defaults or {}).get(name), **extra)(fn)
        return fn
    return apply


@click.command()
@train_field_options(("data", "out"))
@train_field_options()
def train(data, out, **options):
    """Train a MobileNet transfer model on DATA and write a run folder."""
    from facemask_edge.data.ingest import check_data_path
    from facemask_edge.options import check_fields
    from facemask_edge.train.model import check_weights_available
    from facemask_edge.train.trainer import TrainConfig
    from facemask_edge.train.trainer import train as run_train

    options["teacher"] = teachers(options["teacher"])
    options = check_fields(TrainConfig, options, "the options", files=True)
    data = data_value(data)
    cfg = TrainConfig(data=data, out=out, **options)
    # Before TensorFlow and reading the data: a wrong path, or --weights imagenet offline, fails
    # here in a moment.
    check_data_path(data)
    check_weights_available(cfg.weights, cfg.arch, cfg.alpha, cfg.size)
    metrics = run_train(cfg)
    echo_json_summary(f"trained {out}", {
        "test accuracy": metrics.get("test", {}).get("accuracy"),
        "test F1": metrics.get("test", {}).get("f1"),
        "test images": metrics["test_images"],
        "skipped files": metrics["skipped_files"],
        "wall seconds": metrics["wall_seconds"],
    })
