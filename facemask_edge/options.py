"""Option metadata on the config dataclasses, and the one type check of option values.

:class:`~facemask_edge.train.trainer.TrainConfig` and
:class:`~facemask_edge.pipeline.config.PipelineConfig` are the single home of every training and
pipeline option: its name, type, default, help text and allowed values. Two things are derived
from them instead of being written out again:

* the command-line options of ``train``, ``qat``, ``convert``, ``pipeline`` and ``sweep``
  (:func:`facemask_edge.cli._common.field_option`), so an option has one default, shown in
  ``--help`` and the same in every command;
* the check of values that do not come through click (``--config`` TOML files, the board
  defaults in ``defaults.json``, a library caller's dict): :func:`check_fields` runs before any
  work starts and turns ``qat_epochs = "three"`` into one line naming the key, the value, what
  was expected and where it came from, instead of a ``TypeError`` half a minute into a run.

This module imports nothing above :mod:`facemask_edge.errors`, so any layer may use it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from facemask_edge.errors import ConfigError

__all__ = ["option", "meta", "check_fields", "check_value", "describe_type", "choices_of"]


def option(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           help: str = "", choices: Sequence | Callable[[], Sequence] | None = None,
           cli: str | None = None, flag: str | None = None, metavar: str | None = None,
           unset: str | None = None, check: Callable[[Any], str | None] | None = None) -> Any:
    """A dataclass field carrying its command-line description.

    Args:
        default, default_factory: as for :func:`dataclasses.field`.
        help: the ``--help`` text (without the default: that is added from the field).
        choices: the allowed values (``None`` in it allows None), or a function returning them.
        cli: the option's name when it is not ``--`` plus the field name with dashes
            (e.g. ``--limit`` for ``validate_limit``).
        flag: for booleans, click's ``--on/--off`` pair (default ``--name/--no-name``).
        metavar: shown instead of the type in ``--help``.
        unset: what a ``None`` default means, shown as the default (``"all"`` for blocks).
        check: a check of a well-typed value against the file system (a path that must exist);
            returns what was expected, or None. Run only when :func:`check_fields` is asked to.
    """
    metadata = {"help": help, "choices": choices, "cli": cli, "flag": flag, "metavar": metavar,
                "unset": unset, "check": check}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def meta(f: dataclasses.Field, key: str) -> Any:
    """A field's metadata entry (``None`` when the field was declared without :func:`option`)."""
    return f.metadata.get(key)


def choices_of(f: dataclasses.Field) -> tuple | None:
    """The field's allowed values, resolved (``choices`` may be given as a function)."""
    c = meta(f, "choices")
    if callable(c):
        c = c()
    return tuple(c) if c is not None else None


def _arms(hint) -> tuple:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def describe_type(hint) -> str:
    """``int | None`` -> ``"an integer or none"`` (for error messages)."""
    words = []
    for arm in _arms(hint):
        origin = typing.get_origin(arm)
        if arm is type(None):
            words.append("none")
        elif origin in (list, tuple):
            (item, *_) = typing.get_args(arm) or (Any,)
            words.append(f"a list of {_plural(item)}")
        else:
            words.append({bool: "true or false", int: "an integer", float: "a number", str: "a string",
                          dict: "a table"}.get(arm, getattr(arm, "__name__", str(arm))))
    return " or ".join(words)


def _plural(hint) -> str:
    return {int: "integers", float: "numbers", str: "strings"}.get(hint, "values")


_NO = object()


def _coerce(value, hint):
    """``value`` as type ``hint`` (an int where a float is wanted becomes a float), or ``_NO``."""
    for arm in _arms(hint):
        origin = typing.get_origin(arm)
        if arm is type(None):
            if value is None:
                return None
        elif arm is Any:
            return value
        elif origin in (list, tuple):
            if isinstance(value, (list, tuple)):
                (item, *_) = typing.get_args(arm) or (Any,)
                items = [_coerce(v, item) for v in value]
                if all(v is not _NO for v in items):
                    return items
        elif arm is bool:
            if isinstance(value, bool):
                return value
        elif arm is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif arm is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif arm is dict or origin is dict:
            if isinstance(value, dict):
                return value
        elif isinstance(arm, type) and isinstance(value, arm):
            return value
    return _NO


def check_value(cls, name: str, value, where: str, prefix: str = "", files: bool = False):
    """Check one option value against its field; return it (ints made floats where floats are wanted).

    Raises:
        ConfigError: one line with the key, the value, what was expected and ``where``.
    """
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    hint = typing.get_type_hints(cls)[name]
    key = f"{prefix}{name}"
    out = _coerce(value, hint)
    if out is _NO:
        raise ConfigError(f"{key} = {value!r} in {where}: expected {describe_type(hint)}",
                          _hint(cls, f))
    choices = choices_of(f)
    if choices is not None and out not in choices:
        shown = ", ".join("none" if c is None else str(c) for c in choices)
        raise ConfigError(f"{key} = {value!r} in {where}: expected one of {shown}", _hint(cls, f))
    extra = meta(f, "check")
    if files and extra is not None and out is not None:
        expected = extra(out)
        if expected:
            raise ConfigError(f"{key} = {value!r} in {where}: expected {expected}", _hint(cls, f))
    return out


def _hint(cls, f: dataclasses.Field) -> str:
    name = meta(f, "cli") or "--" + f.name.replace("_", "-")
    return f"see `facemask-edge {getattr(cls, 'CLI_COMMAND', 'pipeline')} --help`, option {name}"


def check_fields(cls, values: dict, where: str, prefix: str = "", files: bool = False) -> dict:
    """Check every value of ``values`` against ``cls``'s fields (see :func:`check_value`).

    ``files``: also check that the paths the values name exist (the commands do, before any
    work; a library caller resolving options for later need not).

    Keys that are not fields are left to the caller (it knows the better hint). Returns a copy
    with coerced values.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    out = dict(values)
    for k, v in values.items():
        if k in names:
            out[k] = check_value(cls, k, v, where, prefix, files)
    return out
