"""The ``facemask-edge`` command: a click group whose commands load lazily.

Each command lives in its own module under ``facemask_edge.cli`` and imports TensorFlow only when
it runs, so ``facemask-edge --help`` stays fast. Errors of the ``FacemaskError`` family become one
line on stderr; tracebacks only with ``--verbose``.
"""

from __future__ import annotations

import importlib
import sys

import click

from facemask_edge import __version__
from facemask_edge.errors import FacemaskError

__all__ = ["main", "cli"]

# command name -> (module under facemask_edge.cli, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("train", "train", "Train a MobileNet transfer model (feature extractor, then fine-tuning)."),
    "qat": ("qat", "qat", "Quantization-aware fine-tuning of a trained run."),
    "convert": ("convert", "convert", "Convert a run to a full-int8 TFLite model with its model card."),
    "evaluate": ("evaluate", "evaluate", "Compare float, TFLM int8 and TFLite int8 on the test split."),
    "profile": ("profile", "profile", "Arena, flash and latency estimates against a board's budget."),
    "export": ("export", "export", "Generate firmware sources (C arrays, settings, op resolver)."),
    "flash": ("flash", "flash", "Build and upload the firmware with arduino-cli."),
    "board-sim": ("board_sim", "board_sim", "Run a simulated board on a pseudo-terminal."),
    "emulate": ("emulate", "emulate", "Run the Nano firmware on an emulated Cortex-M4 (QEMU) on a pseudo-terminal."),
    "validate": ("validate", "validate", "Stream test images to a board and compare with the host."),
    "monitor": ("monitor", "monitor", "Show a running board's camera-loop predictions live."),
    "ei": ("ei", "ei", "Edge Impulse: upload data, profile and deploy the model."),
    "pipeline": ("pipeline", "pipeline", "Run every stage: train, QAT, convert, profile, export, validate."),
    "sweep": ("sweep", "sweep", "Sweep architecture, width, input size and colour; Pareto plots."),
    "data": ("data", "data", "Inspect a data set: classes, usable and skipped files, duplicates."),
    "view": ("view", "view", "Local web app: the board's live frames, a run's report, try the model."),
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command is used."""

    def list_commands(self, ctx):
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name][0]
        return importlib.util.find_spec(f"facemask_edge.cli.{module}") is not None

    def get_command(self, ctx, name):
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"facemask_edge.cli.{module}"), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="facemask-edge")
@click.option("--verbose", "-v", is_flag=True, help="Show full tracebacks and debug output.")
@click.pass_context
def cli(ctx, verbose):
    """From a folder of face images to a validated int8 model on a microcontroller."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


def main(argv=None) -> int:
    """Entry point: run the CLI and turn toolkit errors into one-line messages."""
    verbose = "--verbose" in (argv or sys.argv[1:]) or "-v" in (argv or sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="facemask-edge", standalone_mode=False)
    except FacemaskError as exc:
        if verbose:
            raise
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # an unexpected failure: still one line, traceback with --verbose
        if verbose:
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        click.echo(f"error: unexpected {type(exc).__name__}: {first} "
                   "(run with --verbose for the traceback)", err=True)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
