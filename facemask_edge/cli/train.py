"""``facemask-edge train``."""

from __future__ import annotations

import click

from facemask_edge.cli._common import data_option, data_value, echo_json_summary
from facemask_edge.train.model import HEADS

__all__ = ["train"]


def _int_list(ctx, param, value: str | None) -> list[int] | None:
    """Click callback: ``3,5`` -> ``[3, 5]`` (block numbers)."""
    try:
        return [int(b) for b in value.split(",")] if value else None
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of block numbers (e.g. 3,5)") from None


def _teachers(paths) -> str | list[str] | None:
    """One teacher as its path (as configs always stored it), several as a list."""
    paths = [str(p) for p in paths]
    return None if not paths else paths[0] if len(paths) == 1 else paths


@click.command()
@data_option(required=True, multiple=True)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Run folder to write (created).")
@click.option("--arch", type=click.Choice(["mobilenet_v1", "mobilenet_v2", "vgg16", "densenet201"]),
              default="mobilenet_v1", show_default=True,
              help="Backbone. vgg16/densenet201 are for host-side comparison only.")
@click.option("--alpha", type=float, default=0.25, show_default=True, help="MobileNet width multiplier.")
@click.option("--size", type=int, default=96, show_default=True, help="Input side in pixels.")
@click.option("--color", type=click.Choice(["rgb", "grayscale"]), default="rgb", show_default=True)
@click.option("--weights", default="none", show_default=True,
              help="imagenet (Keras download), none, or PATH to a Keras model file whose layers "
                   "up to the pooled features become the backbone (e.g. vww_96.h5).")
@click.option("--blocks", type=int, default=None,
              help="Keep only the first N depthwise-separable blocks of the backbone.")
@click.option("--cut", default=None, help="Or cut the backbone after this layer name.")
@click.option("--skip-blocks", default=None, callback=_int_list,
              help="Drop these stride-1 separable blocks, e.g. 3,5 (fewer MACs; the rest keep their weights).")
@click.option("--head", type=click.Choice(HEADS), default="avg", show_default=True,
              help="Classifier: average-pool then 1x1 conv, or one conv over the whole feature map "
                   "(keeps where features are; for small inputs).")
@click.option("--split", "split", type=click.Choice(["stratified", "seed-notebook"]),
              default="stratified", show_default=True)
@click.option("--group-by", default=None,
              help="Regex on file names whose capture group names the photo: crops of one photo stay "
                   "in one split ('' = off). [default: '<source>_<photo>_<face>.ext', see README]")
@click.option("--exclude-noncommercial", is_flag=True,
              help="Leave out files of non-commercial sources (MaskedFace-Net, mfn_*).")
@click.option("--class-weight", type=click.Choice(["balanced", "none"]), default="balanced",
              show_default=True, help="Loss weights per class: balanced = each class weighs the same.")
@click.option("--seed", type=int, default=1337, show_default=True)
@click.option("--val-fraction", type=float, default=0.15, show_default=True)
@click.option("--test-fraction", type=float, default=0.15, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--head-epochs", type=int, default=3, show_default=True,
              help="Stage 1 (frozen backbone) epochs at most.")
@click.option("--finetune-epochs", type=int, default=60, show_default=True,
              help="Stage 2 (fine-tuning) epochs at most; 0 skips it.")
@click.option("--head-lr", type=float, default=1e-2, show_default=True)
@click.option("--finetune-lr", type=float, default=2e-3, show_default=True)
@click.option("--finetune-layers", type=int, default=0, show_default=True,
              help="Unfreeze the last N backbone layers in stage 2 (0 = all).")
@click.option("--patience", type=int, default=60, show_default=True,
              help="Early stopping: epochs without a better validation result (default: none; "
                   "the cosine schedule runs to its end and the best epoch is kept).")
@click.option("--dropout", type=float, default=0.3, show_default=True)
@click.option("--label-smoothing", type=float, default=0.1, show_default=True)
@click.option("--no-augment", is_flag=True, help="Turn augmentation off.")
@click.option("--freeze-bn", is_flag=True, help="Keep BatchNormalization frozen in fine-tuning.")
@click.option("--teacher", type=click.Path(file_okay=False, exists=True), multiple=True,
              help="Distil from this trained run (its predictions become soft targets); repeat it for an ensemble of teachers.")
@click.option("--distill-alpha", type=float, default=0.5, show_default=True,
              help="Weight of the true labels against the teacher's.")
@click.option("--distill-temperature", type=float, default=2.0, show_default=True)
@click.option("--distribute", type=click.Choice(["mirrored", "multiworker"]), default=None,
              help="tf.distribute strategy; multiworker reads TF_CONFIG.")
@click.option("--wandb", "use_wandb", is_flag=True, help="Log to Weights & Biases (offline mode).")
@click.option("--no-energy", is_flag=True, help="Do not measure energy with CodeCarbon.")
def train(data, out, arch, alpha, size, color, weights, blocks, cut, skip_blocks, head, split, group_by,
          exclude_noncommercial, class_weight, seed, val_fraction,
          test_fraction, batch_size, head_epochs, finetune_epochs, head_lr, finetune_lr,
          finetune_layers, patience, dropout, label_smoothing, no_augment, freeze_bn, teacher,
          distill_alpha, distill_temperature, distribute, use_wandb, no_energy):
    """Train a MobileNet transfer model on DATA and write a run folder."""
    from facemask_edge.train.trainer import TrainConfig
    from facemask_edge.train.trainer import train as run_train

    extra = {"group_by": group_by} if group_by is not None else {}
    cfg = TrainConfig(data=data_value(data), out=out, arch=arch, alpha=alpha, size=size, color=color,
                      weights=weights, blocks=blocks, cut=cut, skip_blocks=skip_blocks, head=head,
                      dropout=dropout, split=split, exclude_noncommercial=exclude_noncommercial,
                      class_weight=class_weight, **extra,
                      seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                      batch_size=batch_size, head_epochs=head_epochs,
                      finetune_epochs=finetune_epochs, head_lr=head_lr, finetune_lr=finetune_lr,
                      finetune_layers=finetune_layers, patience=patience, augment=not no_augment, train_bn=not freeze_bn,
                      label_smoothing=label_smoothing, teacher=_teachers(teacher),
                      distill_alpha=distill_alpha, distill_temperature=distill_temperature,
                      distribute=distribute, wandb=use_wandb,
                      energy=not no_energy)
    metrics = run_train(cfg)
    echo_json_summary(f"trained {out}", {
        "test accuracy": metrics.get("test", {}).get("accuracy"),
        "test F1": metrics.get("test", {}).get("f1"),
        "test images": metrics["test_images"],
        "skipped files": metrics["skipped_files"],
        "wall seconds": metrics["wall_seconds"],
    })
