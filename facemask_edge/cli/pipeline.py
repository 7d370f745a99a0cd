"""``facemask-edge pipeline``: every stage in one command, with a summary."""

from __future__ import annotations

import click

from facemask_edge.cli._common import BOARD, data_value, field_option
from facemask_edge.fmt import span
from facemask_edge.cli.train import train_field_options
from facemask_edge.pipeline.config import STAGES, PipelineConfig, board_defaults
from facemask_edge.boards import BOARDS
from facemask_edge.train.model import BOARD_ARCHS

__all__ = ["pipeline"]

# Options are the fields of PipelineConfig and TrainConfig (help, type, default from there). They
# default to None here (= not given) so that board defaults and --config can fill them in;
# --help shows the field's default and, where a board's defaults differ, the board's value.
_TRAIN = ("weights", "arch", "alpha", "size", "color", "blocks", "cut", "skip_blocks", "head", "teacher",
          "seed", "val_fraction", "test_fraction", "batch_size", "head_epochs", "finetune_epochs", "head_lr",
          "finetune_lr", "finetune_layers", "patience", "dropout", "label_smoothing", "augment", "camera_augment", "train_bn",
          "split", "group_by", "near_duplicates", "exclude_noncommercial", "class_weight", "distill_alpha", "distill_temperature",
          "energy", "wandb")
_LATER = ("qat_epochs", "qat_lr", "representative", "quantization", "compare_ptq", "reference",
          "measure", "tflm", "validate_limit", "sim", "sim_baud", "baud", "validate_timeout", "export_format", "until")


def _by_board() -> dict:
    """``{field: {board: value}}`` of the boards' defaults (top-level and [train] fields)."""
    out: dict = {}
    for b in BOARDS:
        entry = board_defaults(b)
        for k, v in {**entry.get("train", {}), **{k: v for k, v in entry.items() if k != "train"}}.items():
            out.setdefault(k, {})[b] = v
    return out


def _pipeline_options(fn):
    by_board = _by_board()
    for name in reversed(_LATER):
        extra = {"reference": {"type": click.Path(dir_okay=False)},
                 "tflm": {"type": click.Path(file_okay=False)}}.get(name, {})
        fn = field_option(PipelineConfig, name, layered=True, board_defaults=by_board.get(name), **extra)(fn)
    fn = train_field_options(_TRAIN, layered=True, board_defaults=by_board)(fn)
    # The pipeline ships to a board: only the board-sized backbones.
    for p in fn.__click_params__:
        if getattr(p, "source", "") == "TrainConfig.arch":
            p.type = click.Choice(BOARD_ARCHS)
    return fn


@click.command()
@field_option(PipelineConfig, "data", layered=True, multiple=True)
@field_option(PipelineConfig, "out", layered=True, type=click.Path(file_okay=False))
@field_option(PipelineConfig, "board", layered=True, type=BOARD)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file with any of these options (top level) and a [train] table; see README "
                   "'Pipeline config' and benchmarks/pipeline.example.toml.")
@field_option(PipelineConfig, "port", layered=True)
@field_option(PipelineConfig, "demo", layered=True)
@click.option("--redo", type=click.Choice(STAGES), default=None,
              help="Redo this stage and every later one even if up to date.")
@_pipeline_options
def pipeline(config_file, redo, **options):
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

    from facemask_edge.cli._common import teachers

    options["teacher"] = teachers(options["teacher"])
    options["data"] = data_value(options["data"])
    train = {k: options.pop(k) for k in _TRAIN}
    cli = {**options, "train": train}
    cfg = build_config(cli, config_file, check_files=True)
    if not cfg.demo:  # (the demo makes its own backbone file in its data stage)
        from facemask_edge.train.model import check_weights_available

        t = cfg.train_config("")
        # Before TensorFlow and the data: offline, --weights imagenet fails here in a moment.
        check_weights_available(t.weights, t.arch, t.alpha, t.size)
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
            v = span(v[0], v[1])
        click.echo(f"  {k.ljust(width)}  {v}")
    for note in summary.get("licence_notes") or []:
        click.echo(f"licence: {note}")
    click.echo(f"summary: {cfg.out}/summary.md")
