"""``facemask-edge convert``."""

from __future__ import annotations

import click

from facemask_edge.cli._common import echo_json_summary, field_option, run_dir_argument
from facemask_edge.pipeline.config import PipelineConfig

__all__ = ["convert"]


@click.command()
@run_dir_argument()
@click.option("--no-qat", is_flag=True,
              help="Post-training quantization of the float model, even if a QAT model exists.")
@click.option("--select-best", is_flag=True,
              help="Convert both PTQ and QAT (if trained) and keep the int8 model most faithful "
                   "to the float model on the validation split.")
@field_option(PipelineConfig, "representative")
def convert(run_dir, no_qat, select_best, representative):
    """Convert RUN_DIR to a full-int8 model_int8.tflite with labels.txt and model_card.json."""
    from pathlib import Path

    from facemask_edge.convert.converter import convert_run
    from facemask_edge.convert.converter import select_best as run_select_best
    from facemask_edge.runs import read_json

    if select_best:
        run_select_best(run_dir, representative=representative)
        path = Path(run_dir) / "model_int8.tflite"
    else:
        path = convert_run(run_dir, qat=False if no_qat else None, representative=representative)
    card = read_json(path.parent / "model_card.json")
    ops = ", ".join(f"{o['name']} v{o['version']}" for o in card["ops"])
    echo_json_summary(f"wrote {path}", {
        "quantization": card["quantization"],
        "input": f"{card['input']['shape']} int8, scale 1/255, zero point {card['input']['zero_point']}",
        "flatbuffer bytes": card["flatbuffer_bytes"],
        "arena bytes": card["arena_bytes"],
        "MACs": f"{card['macs']:,}",
        "ops": ops,
        "seconds": card["convert_seconds"],
        **({"selected": card["selection"]["selected"] + " (most faithful to the float model on "
                        "validation)"} if "selection" in card else {}),
    })
