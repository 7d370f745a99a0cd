"""``facemask-edge convert``."""

from __future__ import annotations

import click

from facemask_edge.cli._common import FieldOption, echo_json_summary, field_option, run_dir_argument
from facemask_edge.pipeline.config import PipelineConfig

__all__ = ["convert"]


# PipelineConfig.quantization as flags: one default ("best", the pipeline's rule) for both commands.
_Q = {"cls": FieldOption, "source": "PipelineConfig.quantization", "shown": PipelineConfig.quantization}
_SHOWN = f"  [default: {PipelineConfig.quantization}]"


@click.command()
@run_dir_argument()
@click.option("--best", "quantization", flag_value="best", default=PipelineConfig.quantization == "best", **_Q,
              help="Convert PTQ and, if trained, QAT; ship the one most faithful to the float model on the "
                   "validation split (the pipeline's rule)." + _SHOWN)
@click.option("--ptq", "quantization", flag_value="ptq", **_Q,
              help="Ship post-training quantization of the float model." + _SHOWN)
@click.option("--qat", "quantization", flag_value="qat", **_Q,
              help="Ship the quantization-aware model (facemask-edge qat first)." + _SHOWN)
@click.option("--no-qat", "quantization", flag_value="ptq", hidden=True, **_Q)  # older name of --ptq
@click.option("--select-best", "quantization", flag_value="best", hidden=True, **_Q)  # older name of --best
@field_option(PipelineConfig, "representative")
def convert(run_dir, quantization, representative):
    """Convert RUN_DIR to a full-int8 model_int8.tflite with model_card.json.

    Says which variant it shipped and why, with each variant's validation figures.
    """
    from facemask_edge.artifacts.run import Run
    from facemask_edge.convert.converter import convert_run

    sel = convert_run(run_dir, quantization=quantization, representative=representative)
    m = Run(run_dir).shipped()
    card = m.card
    ops = ", ".join(f"{o['name']} v{o['version']}" for o in card["ops"])
    figures = {
        "shipped": f"{sel['selected'].upper()} ({sel['by']})",
        "input": f"{card['input']['shape']} int8, scale 1/255, zero point {card['input']['zero_point']}",
        "flatbuffer bytes": card["flatbuffer_bytes"],
        "arena bytes": card["arena_bytes"],
        "MACs": f"{card['macs']:,}",
        "ops": ops,
        "sha256": m.sha256,
    }
    for kind, v in sel["validation"].items():
        figures[f"{kind} on validation"] = (
            f"agreement with float {v['label_agreement_with_float']:.4f}, score diff "
            f"{v['mean_score_diff']:.4f}, accuracy {v['accuracy']:.4f} ({v['images']} images)")
    echo_json_summary(f"wrote {m.path}", figures)
