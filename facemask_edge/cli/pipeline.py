"""``facemask-edge pipeline``: every stage in one command, with a summary."""

from __future__ import annotations

import click

from facemask_edge.cli.train import _int_list, _teachers
from facemask_edge.cli._common import BOARD, data_value
from facemask_edge.train.model import HEADS

__all__ = ["pipeline"]

_STAGES = ("data", "train", "qat", "convert", "profile", "evaluate", "export", "validate")


@click.command()
@click.option("--data", default=None, multiple=True,
              help="Data set: a folder with one sub-folder per class, a .zip of one, or an http(s) "
                   "URL of a zip; repeat it to merge several by class folder name. Default: download the public Face-Mask-Detection data set once "
                   "into the user cache.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Run folder (created; re-running continues it). Default with --demo: "
                   "./facemask-edge-demo.")
@click.option("--board", type=BOARD, default=None,
              help="Target board; its defaults (model, input size, epochs) come from the sweep's "
                   "recommendation. [default: nano33ble]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file with any of these options (top level) and a [train] table.")
@click.option("--port", default=None,
              help="Validate on the board at this port/URL; default: a simulated board.")
@click.option("--demo", is_flag=True, default=None,
              help="Synthetic faces + a tiny backbone + the simulated board: every stage in about "
                   "a minute, no data set, weights or network needed.")
@click.option("--redo", type=click.Choice(_STAGES), default=None,
              help="Redo this stage and every later one even if up to date.")
# Training (see `facemask-edge train --help`).
@click.option("--weights", default=None,
              help="imagenet, none, or PATH to a Keras model file used as the backbone (e.g. vww_96.h5).")
@click.option("--arch", type=click.Choice(["mobilenet_v1", "mobilenet_v2"]), default=None)
@click.option("--alpha", type=float, default=None, help="MobileNet width multiplier.")
@click.option("--size", type=int, default=None, help="Input side in pixels.")
@click.option("--color", type=click.Choice(["rgb", "grayscale"]), default=None)
@click.option("--blocks", type=int, default=None, help="Keep the first N depthwise-separable blocks.")
@click.option("--cut", default=None, help="Or cut the backbone after this layer name.")
@click.option("--skip-blocks", default=None, callback=_int_list,
              help="Drop these stride-1 separable blocks of the backbone, e.g. 3,5.")
@click.option("--head", type=click.Choice(HEADS), default=None,
              help="Classifier: average-pool + 1x1 conv, or one conv over the whole feature map.")
@click.option("--teacher", type=click.Path(file_okay=False, exists=True), multiple=True,
              help="Distil from this trained run (e.g. a 96 px model); repeat it for an ensemble of teachers.")
@click.option("--seed", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--head-epochs", type=int, default=None, help="Stage 1 (frozen backbone) epochs at most.")
@click.option("--finetune-epochs", type=int, default=None, help="Stage 2 (fine-tuning) epochs at most.")
@click.option("--head-lr", type=float, default=None)
@click.option("--finetune-lr", type=float, default=None)
@click.option("--finetune-layers", type=int, default=None, help="Unfreeze the last N backbone layers (0 = all).")
@click.option("--patience", type=int, default=None)
@click.option("--dropout", type=float, default=None)
@click.option("--label-smoothing", type=float, default=None)
@click.option("--augment/--no-augment", default=None)
@click.option("--split", "split", type=click.Choice(["stratified", "seed-notebook"]), default=None)
@click.option("--group-by", default=None,
              help="Regex on file names whose capture group names the photo: its crops share a split ('' = off).")
@click.option("--exclude-noncommercial/--include-noncommercial", default=None,
              help="Leave out files of non-commercial sources (MaskedFace-Net, mfn_*). [default: include]")
@click.option("--class-weight", type=click.Choice(["balanced", "none"]), default=None,
              help="Loss weights per class. [default: balanced]")
@click.option("--energy/--no-energy", default=None, help="Measure energy with CodeCarbon when installed.")
# Later stages.
@click.option("--qat-epochs", type=int, default=None, help="Quantization-aware training epochs (0: PTQ only).")
@click.option("--qat-lr", type=float, default=None)
@click.option("--representative", type=int, default=None, help="Calibration images for PTQ.")
@click.option("--quantization", type=click.Choice(["best", "qat", "ptq"]), default=None,
              help="Which int8 model to ship: best = PTQ or QAT, whichever agrees more with the float "
                   "model on the validation split. [default: best]")
@click.option("--compare-ptq/--no-compare-ptq", default=None,
              help="With --quantization qat, still convert PTQ for the evaluation. [default: on]")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="Profile this .tflite alongside as the reference (e.g. vww_96_int8.tflite).")
@click.option("--limit", "validate_limit", type=int, default=None, help="Validate only the first N test images.")
@click.option("--sim", type=click.Choice(["subprocess", "inprocess"]), default=None,
              help="Run the simulated board as its own process or in this one. [default: subprocess]")
@click.option("--sim-baud", type=int, default=None, help="Pace the simulated board's link (0: unpaced).")
@click.option("--baud", type=int, default=None, help="UART speed of --port (USB CDC ignores it).")
@click.option("--timeout", "validate_timeout", type=float, default=None,
              help="Seconds to wait for a board that does not answer.")
def pipeline(data, out, board, config_file, port, demo, redo, weights, arch, alpha, size, color, blocks,
             cut, skip_blocks, head, teacher, seed, batch_size, head_epochs, finetune_epochs, head_lr, finetune_lr, finetune_layers,
             patience, dropout, label_smoothing, augment, split, group_by, exclude_noncommercial, class_weight,
             energy, qat_epochs, qat_lr,
             representative, quantization, compare_ptq, reference, validate_limit, sim, sim_baud, baud,
             validate_timeout):
    """Train, quantize, convert, profile, evaluate, export and validate in one command.

    Writes RUN_DIR/summary.md, summary.json and summary_*.png. Stages whose inputs and options
    did not change are skipped: re-running a finished pipeline redoes nothing, and re-running
    after an interruption continues where it stopped.
    """
    import warnings

    from facemask_edge.pipeline import build_config, run_pipeline

    # TensorFlow's deprecation notices (tf.lite.Interpreter, converter statistics) are not ours
    # to act on and would bury the progress lines.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"tensorflow(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    train = dict(weights=weights, arch=arch, alpha=alpha, size=size, color=color, blocks=blocks,
                 cut=cut, skip_blocks=skip_blocks, head=head, teacher=_teachers(teacher), seed=seed, batch_size=batch_size, head_epochs=head_epochs,
                 finetune_epochs=finetune_epochs, head_lr=head_lr, finetune_lr=finetune_lr,
                 finetune_layers=finetune_layers, patience=patience, dropout=dropout,
                 label_smoothing=label_smoothing, augment=augment, split=split, energy=energy,
                 group_by=group_by, exclude_noncommercial=exclude_noncommercial, class_weight=class_weight)
    cli = dict(data=data_value(data), out=out, board=board, port=port, demo=demo, train=train,
               qat_epochs=qat_epochs, qat_lr=qat_lr, representative=representative,
               quantization=quantization, compare_ptq=compare_ptq, reference=reference, validate_limit=validate_limit,
               sim=sim, sim_baud=sim_baud, baud=baud, validate_timeout=validate_timeout)
    cfg = build_config(cli, config_file)
    summary = run_pipeline(cfg, redo=redo)
    h = summary["headline"]
    click.echo(f"{cfg.out}: {'demo, ' if cfg.demo else ''}board {cfg.board}")
    secs = {"stage time s", "this run s"}
    # More than two classes: macro-F1 and each class's recall lead (the summary's headline).
    per_class = [(k.replace("_", " ").replace(" host test", " host"), v) for k, v in h.items()
                 if k.endswith("_test_macro_f1") or "_test_recall_" in k]
    rows = [*per_class,
            ("float test accuracy", h.get("float_test_accuracy")),
            ("int8 host test accuracy", h.get("int8_host_test_accuracy")),
            ("int8 on-device accuracy", h.get("int8_device_test_accuracy")),
            ("device/host bit-exact", h.get("device_host_bit_exact")),
            ("model flatbuffer bytes", h.get("flatbuffer_bytes")),
            ("tensor arena bytes", h.get("arena_bytes")),
            (f"latency ms ({cfg.board})", h.get(f"latency_ms_{cfg.board}")),
            ("stage time s", summary["pipeline_seconds"]),
            ("this run s", summary["this_invocation_seconds"])]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        if v is None:
            continue
        if isinstance(v, float):
            v = f"{v:.1f}" if k in secs else f"{v:.4f}"
        elif isinstance(v, list):
            v = f"{v[0]:.0f}-{v[1]:.0f}"
        click.echo(f"  {k.ljust(width)}  {v}")
    for note in summary.get("licence_notes") or []:
        click.echo(f"licence: {note}")
    click.echo(f"summary: {cfg.out}/summary.md")
