"""Options and output helpers shared by the commands."""

from __future__ import annotations

import click

__all__ = ["BOARD", "BoardType", "board_option", "data_option", "data_value", "run_dir_argument",
           "echo_json_summary"]


class BoardType(click.ParamType):
    """A ``--board`` value checked against the board registry when the command runs.

    Unlike ``click.Choice(list(BOARDS))``, which freezes the names when the module is imported,
    a board registered later (:func:`facemask_edge.boards.register_board`) is accepted too. An
    unknown name is the registry's one-line error listing the valid boards.
    """

    name = "board"

    def get_metavar(self, param, ctx=None) -> str:  # click < 8.2 passes no ctx
        from facemask_edge.boards import board_names

        return "[" + "|".join(board_names()) + "]"

    def convert(self, value, param, ctx):
        from facemask_edge.boards import get_board

        return get_board(value).name

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        from facemask_edge.boards import board_names

        return [CompletionItem(n) for n in board_names() if n.startswith(incomplete)]


BOARD = BoardType()


def board_option(*names: str, **kwargs):
    """``--board``/``-b`` taking a registered board name (other click.option kwargs pass through)."""
    kwargs.setdefault("type", BOARD)
    kwargs.setdefault("help", "Target board.")
    return click.option(*(names or ("--board", "-b")), **kwargs)


def data_option(required: bool = False, multiple: bool = False):
    """``--data``; with ``multiple``, repeatable: several roots merged by class folder name
    (pass the value through :func:`data_value`)."""
    more = " Repeat it to merge several data sets by class folder name." if multiple else ""
    return click.option("--data", required=required, type=str, multiple=multiple,
                        help="Data set: a folder with one sub-folder per class, or a .zip of one." + more)


def data_value(values):
    """A repeatable ``--data`` as the library takes it: None, one path, or a list of paths."""
    if values is None or isinstance(values, str):
        return values
    values = [str(v) for v in values]
    return None if not values else values[0] if len(values) == 1 else values


def run_dir_argument():
    return click.argument("run_dir", type=click.Path(file_okay=False))


def echo_json_summary(title: str, figures: dict) -> None:
    """Print a short result block: a title and aligned ``name: value`` lines."""
    click.echo(title)
    width = max((len(k) for k in figures), default=0)
    for key, value in figures.items():
        if isinstance(value, float):
            value = f"{value:.4f}" if value < 100 else f"{value:.1f}"
        click.echo(f"  {key.ljust(width)}  {value}")
