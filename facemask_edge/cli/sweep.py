"""``facemask-edge sweep``: architecture x width x size x colour, Pareto plots, a model per board."""

from __future__ import annotations

import click

from facemask_edge.fmt import span

from facemask_edge.boards import BOARDS
from facemask_edge.cli._common import data_value, field_option, teachers
from facemask_edge.pipeline.config import PipelineConfig
from facemask_edge.sweep import FAST_EPOCHS, FULL_EPOCHS
from facemask_edge.train.trainer import TrainConfig

__all__ = ["sweep"]

# The boards' latency budgets (their registry entries), for --help.
_BUDGETS = ",".join(f"{b.name}={b.latency_budget_ms:g}" for b in BOARDS.values() if b.latency_budget_ms)


def _csv(kind):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            return [kind(v.strip()) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list, got {value!r}") from None
    return parse


def _blocks(v: str):
    return None if v in ("all", "none", "0") else int(v)


def _skip(v: str):
    return () if v in ("none", "-", "0") else tuple(int(b) for b in v.split("+"))


def _latency(ctx, param, value):
    """``150`` (every board) or ``nano33ble=150,esp32cam=500``."""
    if value is None:
        return None
    try:
        if "=" not in value:
            return {b: float(value) for b in BOARDS}
        out = {}
        for part in value.split(","):
            board, _, ms = part.partition("=")
            if board.strip() not in BOARDS:
                raise ValueError
            out[board.strip()] = float(ms)
        return out
    except ValueError:
        raise click.BadParameter(f"{value!r}: give milliseconds (150) or BOARD=MS pairs "
                                 f"(nano33ble=150,esp32cam=500)") from None


def _family(v: str):
    arch, _, alpha = v.partition(":")
    if arch not in ("mobilenet_v1", "mobilenet_v2") or not alpha:
        raise ValueError(v)
    return arch, float(alpha)


@click.command()
@field_option(PipelineConfig, "data", layered=True, multiple=True)
@field_option(PipelineConfig, "out", required=True, default=None, type=click.Path(file_okay=False),
              help="Sweep folder (re-running continues it).")
@field_option(TrainConfig, "weights", multiple=True, default=(),
              help="imagenet or none: sweep Keras' MobileNet widths (--families) with those weights; PATH: "
                   "a backbone file (e.g. vww_96.h5), sweep its --blocks cuts x sizes x colours. Repeat it "
                   "for a backbone axis (e.g. vww_96.h5, mobilenet_v1_025_imagenet.h5, ..._retinaface.h5).")
@click.option("--keras-weights", type=click.Choice(["imagenet", "none", "skip"]), default=None,
              help="With --weights PATH, also sweep Keras' MobileNets with these weights. [default: skip]")
@click.option("--fast", is_flag=True,
              help="Few epochs and a subset of the grid (about six configurations).")
@click.option("--sizes", callback=_csv(int), default=None, help="Input sizes, e.g. 64,80,96.")
@click.option("--colors", callback=_csv(str), default=None, help="rgb,grayscale")
@click.option("--blocks", callback=_csv(_blocks), default=None, help="Backbone cuts, e.g. 3,5,7,all.")
@click.option("--skips", callback=_csv(_skip), default=None,
              help="Stride-1 blocks of the backbone file to drop, an axis: e.g. none,3,3+5.")
@click.option("--only", callback=_csv(str), default=None,
              help="Keep just these configuration names (see --dry-run).")
@click.option("--heads", callback=_csv(str), default=None,
              help="Classifier heads, an axis: avg,spatial (default: avg; spatial names end in -sp).")
@click.option("--augments", callback=_csv(str), default=None,
              help="Training augmentation, an axis: none,basic,camera (default: basic; camera names end "
                   "in -cam, none in -noaug).")
@field_option(TrainConfig, "teacher", type=click.Path(file_okay=False, exists=True), multiple=True, default=(),
              help="Distil every configuration from this trained run (e.g. a 96 px model); repeat it for an ensemble.")
@click.option("--families", callback=_csv(_family), default=None,
              help="Keras MobileNets as arch:alpha, e.g. mobilenet_v1:0.25,mobilenet_v2:0.35.")
@click.option("--limit", type=int, default=None, help="Only the first N configurations.")
# Each configuration's schedule: train's and the pipeline's defaults, or --fast's short one.
@field_option(TrainConfig, "head_epochs", layered=True,
              help=f"Stage 1 epochs at most (--fast: {FAST_EPOCHS['head_epochs']}).")
@field_option(TrainConfig, "finetune_epochs", layered=True,
              help=f"Stage 2 epochs at most (--fast: {FAST_EPOCHS['finetune_epochs']}).")
@field_option(PipelineConfig, "qat_epochs", layered=True,
              help=f"QAT epochs at most (--fast: {FAST_EPOCHS['qat_epochs']}).")
@field_option(TrainConfig, "seed", layered=True)
@field_option(TrainConfig, "batch_size", layered=True)
@click.option("--max-latency-ms", "max_latency", callback=_latency, default=None,
              help="Latency estimate allowed: MS for every board or BOARD=MS,... "
                   f"[default: {_BUDGETS}]")
@click.option("--latency-estimate", type=click.Choice(["high", "low"]), default="high", show_default=True,
              help="Which end of the latency estimate (cycles/MAC range) must meet the budget.")
@field_option(PipelineConfig, "reference", type=click.Path(dir_okay=False),
              help="Reference int8 .tflite (e.g. vww_96_int8.tflite): ratio columns and plot lines, and the "
                   "Nano 33 BLE pick must stay within 45 % of its arena and 25 % of its flatbuffer.")
@field_option(PipelineConfig, "measure",
              help="Measure every configuration on the emulated Cortex-M4: the Nano's latency budget is then "
                   "checked on the measured camera frame (preprocessing + inference), not the MAC estimate.")
@field_option(PipelineConfig, "tflm", type=click.Path(file_okay=False))
@click.option("--tolerance", type=float, default=0.005, show_default=True,
              help="Accuracies this close count as equal; then the smallest arena wins.")
@click.option("--write-defaults", is_flag=True,
              help="Write the recommendation into facemask_edge/defaults.json (the pipeline's --board defaults).")
@click.option("--dry-run", is_flag=True, help="List the configurations and exit.")
def sweep(data, out, weights, keras_weights, fast, sizes, colors, blocks, skips, only, heads, augments, teacher, families, limit, head_epochs,
          finetune_epochs, qat_epochs, seed, batch_size, max_latency, latency_estimate, reference, measure,
          tflm, tolerance, write_defaults, dry_run):
    """Train, quantize and profile many configurations briefly; table, Pareto plots, a pick per board.

    Writes OUT/sweep.md, sweep.json, pareto_arena.png, pareto_latency.png and
    recommendation.json; each configuration's run folder is OUT/configs/NAME.
    """
    import warnings

    from facemask_edge.sweep import build_grid, run_sweep, write_defaults as write

    warnings.filterwarnings("ignore", category=UserWarning, module=r"tensorflow(\.|$)")
    weights = weights or (TrainConfig.__dataclass_fields__["weights"].default,)  # train's default
    keras = sorted({w for w in weights if w in ("imagenet", "none")})
    files = [w for w in weights if w not in ("imagenet", "none")]
    if len(keras) > 1 or (keras and keras_weights not in (None, keras[0])):
        raise click.BadParameter("give Keras' MobileNets one kind of weights (imagenet or none)",
                                 param_hint="--weights / --keras-weights")
    if keras:
        keras_weights = keras[0]
    elif keras_weights is None:
        keras_weights = "skip"
    weights = files
    for c in colors or ():
        if c not in ("rgb", "grayscale"):
            raise click.BadParameter(f"unknown colour {c!r} (use rgb, grayscale)", param_hint="--colors")
    from facemask_edge.train.model import HEADS

    for h in heads or ():
        if h not in HEADS:
            raise click.BadParameter(f"unknown head {h!r} (use {', '.join(HEADS)})", param_hint="--heads")
    from facemask_edge.sweep import AUGMENTS

    for a in augments or ():
        if a not in AUGMENTS:
            raise click.BadParameter(f"unknown augmentation {a!r} (use {', '.join(AUGMENTS)})",
                                     param_hint="--augments")
    points = build_grid(weights, keras_weights, fast, sizes, colors, blocks, families, skips, only, heads,
                        augments)
    if limit:
        points = points[:limit]
    epochs = dict(FAST_EPOCHS if fast else FULL_EPOCHS)
    for k, v in (("head_epochs", head_epochs), ("finetune_epochs", finetune_epochs), ("qat_epochs", qat_epochs)):
        if v is not None:
            epochs[k] = v
    if dry_run:
        for p in points:
            click.echo(f"{p.name}: " + ", ".join(f"{k} {_cell(v)}" for k, v in p.describe().items()
                                                 if k != "name" and v is not None))
        click.echo(f"{len(points)} configurations; epochs at most: " +
                   ", ".join(f"{k.removesuffix('_epochs')} {v}" for k, v in epochs.items()))
        return
    from facemask_edge.train.model import check_weights_available

    for p in points:  # offline, Keras' ImageNet weights fail here at once, not once per configuration
        t = p.train
        if t.get("weights") == "imagenet":
            check_weights_available("imagenet", t.get("arch", "mobilenet_v1"), t.get("alpha", 0.25), t["size"])
    train_options = {k: v for k, v in (("seed", seed), ("batch_size", batch_size)) if v is not None}
    if teacher:
        from pathlib import Path

        train_options["teacher"] = teachers(str(Path(t).resolve()) for t in teacher)
    budget = max_latency
    res = run_sweep(data_value(data), out, points, epochs, train_options, budget, tolerance, reference=reference,
                    latency_estimate=latency_estimate, measure=measure, tflm=tflm)
    click.echo(f"{len(res['rows'])} configurations ({len(res['failed'])} failed) in {res['wall_seconds']:.0f} s")
    for b, r in res["recommendation"].items():
        if r.get("name"):
            click.echo(f"  {b}: {r['name']} int8 val {r['int8_val_accuracy']:.4f}, arena {r['arena_bytes']:,} B, "
                       f"latency {span(*r['latency_ms'])} ms")
        else:
            click.echo(f"  {b}: {r['why']}")
    if write_defaults:
        path = write(res["recommendation"], source=f"facemask-edge sweep --out {out}")
        click.echo(f"defaults: {path}")
    click.echo(f"table: {out}/sweep.md")


def _cell(v) -> str:
    """A configuration value as a user reads it: ``3,5`` for a list."""
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
