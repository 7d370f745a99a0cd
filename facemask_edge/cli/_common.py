"""Options and output helpers shared by the commands.

The options of ``train``, ``qat``, ``convert``, ``pipeline`` and ``sweep`` that set a config
field are derived from that field (:func:`field_option`): its type, allowed values, help text and
default come from :class:`~facemask_edge.train.trainer.TrainConfig` or
:class:`~facemask_edge.pipeline.config.PipelineConfig`, so an option cannot have one default in
one command and another elsewhere, and ``--help`` always shows it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing

import click

from facemask_edge.options import choices_of, meta

__all__ = ["BOARD", "BoardType", "board_option", "data_option", "data_value", "run_dir_argument", "echo_json_summary",
           "field_option", "FieldOption",
           "int_list", "teachers", "shown_default"]


class FieldOption(click.Option):
    """A click option derived from a config field; ``source`` is ``"Class.field"``."""

    def __init__(self, *args, source: str = "", shown: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.source = source
        self.shown = shown  # the default as --help shows it (None: no default)


def int_list(ctx, param, value: str | None) -> list[int] | None:
    """Click callback: ``3,5`` -> ``[3, 5]`` (block numbers)."""
    try:
        return [int(b) for b in value.split(",")] if value else None
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of block numbers (e.g. 3,5)") from None


def teachers(paths) -> str | list[str] | None:
    """One teacher as its path (as configs always stored it), several as a list."""
    paths = [str(p) for p in paths]
    return None if not paths else paths[0] if len(paths) == 1 else paths


def _flag(f: dataclasses.Field, name: str) -> str:
    return meta(f, "flag") or f"{name}/--no-{name[2:]}"


def shown_default(value, f: dataclasses.Field | None = None, name: str = "") -> str | None:
    """A default as ``--help`` shows it: ``96``, ``0.002``, ``--augment``; None when unset."""
    if value is None or value in ((), [], ""):
        return None
    if isinstance(value, bool):
        on, _, off = _flag(f, name).partition("/") if f is not None else (name, "", "--no-" + name[2:])
        return on if value else off
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def field_option(cls, name: str, *, layered: bool = False, board_defaults: dict | None = None,
                 cli: str | None = None, help: str | None = None, **overrides):
    """A click option for field ``name`` of config dataclass ``cls``.

    Args:
        cls: ``TrainConfig`` or ``PipelineConfig``.
        name: the field; the option's parameter has the same name.
        layered: the command merges options with other layers (``pipeline``): the option's own
            default is None (= not given) and ``--help`` shows the field's default.
        board_defaults: ``{board: value}`` where a board's defaults replace the field's default
            (shown after it).
        cli: the option name, when a command uses another one than the field's (``qat --epochs``).
        help: replaces the field's help text (the default is still appended).
        **overrides: passed on to :func:`click.option` (``type``, ``multiple``, ``callback``...).
    """
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    hint = typing.get_type_hints(cls)[name]
    arms = [a for a in typing.get_args(hint) or (hint,) if a is not type(None)]
    opt = cli or meta(f, "cli") or "--" + name.replace("_", "-")
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    shown = shown_default(default, f, opt) or meta(f, "unset")
    kwargs: dict = {}
    decl = opt
    if arms == [bool]:
        decl = _flag(f, opt) if cli is None else f"{opt}/--no-{opt[2:]}"
    elif choices_of(f) is not None:
        kwargs["type"] = click.Choice([c for c in choices_of(f) if c is not None])
    elif typing.get_origin(arms[0]) in (list, tuple):
        kwargs.update(type=str, callback=int_list)
    elif arms[0] in (int, float, str):
        kwargs["type"] = arms[0]
    if meta(f, "metavar"):
        kwargs["metavar"] = meta(f, "metavar")
    text = help if help is not None else (meta(f, "help") or "")
    others = {b: v for b, v in (board_defaults or {}).items() if v != default}
    if shown is not None or others:
        extra = ""
        if others:
            extra = "; with --board " + ", ".join(f"{b}: {shown_default(v, f, opt) or 'none'}"
                                                  for b, v in others.items())
        text = f"{text}  [default: {shown or 'none'}{extra}]"
    kwargs.update(default=None if layered else default, show_default=False, help=text)
    kwargs.update(overrides)
    return click.option(decl, name, cls=FieldOption, source=f"{cls.__name__}.{name}", shown=shown, **kwargs)



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
            # Seconds are measured to a tenth; ratios (accuracy, F1) to four decimals.
            value = f"{value:.1f}" if key.endswith("seconds") or value >= 100 else f"{value:.4f}"
        click.echo(f"  {key.ljust(width)}  {value}")


def link_port(link, path: str) -> None:
    """Make ``link`` a symlink to the pty ``path`` (``--link``: a stable port name), replacing an
    old link or file of that name.

    Raises:
        FacemaskError: the link cannot be made (one line, with what to do).
    """
    import os

    from facemask_edge.errors import FacemaskError

    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(path, link)
    except OSError as exc:
        raise FacemaskError(f"cannot create {link}: {exc.strerror}", "choose another --link path") from None


def serve_until_stopped(duration: float | None = None, poll=None) -> None:
    """Wait until Ctrl-C, SIGTERM, ``duration`` seconds, or ``poll()`` returning False.

    The serving commands (board-sim, emulate) print "Ctrl-C to stop"; both signals end the wait.
    SIGINT is taken over explicitly: a process started in the background by a non-interactive
    shell (``cmd &``, a CI runner) inherits SIGINT *ignored*, and Python then never raises
    KeyboardInterrupt, so `kill -INT` (what the tests and supervisors send) did nothing and the
    simulator served for ever.
    """
    import signal
    import threading
    import time

    done = threading.Event()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    t0 = time.monotonic()
    try:
        while not done.wait(0.5):
            if poll is not None and not poll():
                return
            if duration is not None and time.monotonic() - t0 >= duration:
                return
    except KeyboardInterrupt:
        pass


@contextlib.contextmanager
def published_port(link, path: str):
    """Print the port users connect to (``link``, a symlink made to ``path``, or ``path``) on
    stdout, for scripts to read, and remove the link again when the serving command ends.

    SIGINT raises KeyboardInterrupt from before the port is printed (see
    :func:`serve_until_stopped`): a supervisor may send it the moment it reads the port, and a
    process started with SIGINT ignored used to miss one that came before the wait began
    (1 run in 6 of the board-sim SIGINT test hung that way on a loaded machine).
    """
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if link:
            link_port(link, path)
        click.echo(str(link or path))
        sys.stdout.flush()
        yield
    finally:
        if link and link.is_symlink():
            link.unlink()
