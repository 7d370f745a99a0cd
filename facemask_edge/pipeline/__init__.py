"""Every stage in one call: data -> train -> QAT -> convert -> profile -> evaluate -> export ->
validate, then a summary.

Each stage writes into the run folder and is recorded in ``RUN_DIR/pipeline_state.json`` with a
key: the hash of its options and of the files it reads. A stage whose key is unchanged and whose
outputs are still the files it wrote is skipped, so re-running a finished pipeline redoes
nothing, changing an option redoes that stage and those after it (their inputs change), and
re-running after an interruption continues at the interrupted stage (training resumes after its
last completed epoch, validation image by image). Each stage is one library call that owns its
artifact names and reads the run through ``facemask_edge.artifacts.run.Run``.

Options come from, lowest first: the dataclass defaults, the board's entry in
``facemask_edge/defaults.json`` (or the demo preset), a TOML file, and explicit arguments.
``summary.md``, ``summary.json`` and ``summary_*.png`` hold every stage's figures and wall time.
"""

from facemask_edge.pipeline.config import (STAGES, PipelineConfig, board_defaults, build_config,
                                           demo_preset, load_toml)
from facemask_edge.pipeline.run import run_pipeline
from facemask_edge.pipeline.summary import summary_markdown

__all__ = ["STAGES", "PipelineConfig", "build_config", "board_defaults", "demo_preset",
           "run_pipeline", "summary_markdown", "load_toml"]
