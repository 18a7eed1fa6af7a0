"""Command-line flags derived from a stage config (``tokenweight.config``).

A field ``max_steps: int = 100`` becomes ``--max-steps`` (its help text ends with the default); a
``bool`` field becomes ``--flag/--no-flag``; a list field takes a comma-separated value; an
optional field also accepts ``none``; a positional field takes any number of arguments. Values
are parsed by :func:`tokenweight.config.coerce`, the same function that reads YAML, so a value
means the same thing in both places. Every flag's argparse default is "not given", so a YAML config
(``--config``) fills the fields first and explicit flags override it.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from tokenweight.config import StageConfig, _strip_optional

_NOT_GIVEN = argparse.SUPPRESS


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "empty"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _type_name(tp: Any) -> str:
    import typing

    inner, _ = _strip_optional(tp)
    if typing.get_origin(inner) in (list, tuple):
        return "LIST"
    return {int: "INT", float: "X", str: "TEXT"}.get(inner, "VALUE")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[StageConfig]) -> None:
    """One argument per field of ``cls`` (fields with ``cli=False`` are YAML/Python only)."""
    types = cls.field_types()
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        target = parser
        if meta.get("group"):
            target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = meta.get("help", "")
        help_text = (help_text + f" (default {_default_text(default)})").replace("%", "%%")
        tp = types[f.name]
        inner, optional = _strip_optional(tp)
        if meta.get("choices"):  # checked by validate(), so that a bad value is one line like any other
            help_text = f"{help_text[: -len(')')]}; one of {', '.join(map(str, meta['choices']))})"
        kwargs: dict[str, Any] = {"help": help_text, "default": _NOT_GIVEN}
        if meta.get("positional"):
            target.add_argument(f.name, nargs="*", metavar=meta.get("metavar") or f.name.upper(), **kwargs)
            continue
        if inner is bool:
            target.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        kwargs["metavar"] = meta.get("metavar") or _type_name(tp)
        target.add_argument(flag(f.name), dest=f.name, **kwargs)


def config_from_args(cls: type[StageConfig], args: argparse.Namespace, base: dict | None = None) -> StageConfig:
    """The config from YAML values ``base`` overridden by the flags given on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names}
    config = cls.from_dict(base or {}, source="config")  # unknown YAML keys are named as such
    return dataclasses.replace(config, **cls.from_dict(given, source="the command line").given(given))


def flag_message(message: str, cls: type[StageConfig]) -> str:
    """A ``ValueError`` message of ``validate()`` whose first word is a field name, with that name
    written as its flag (CLI users type ``--max-steps``, Python users ``max_steps``)."""
    head, sep, rest = message.partition(" ")
    name = head.rstrip(":")
    for f in dataclasses.fields(cls):
        if f.name == name and f.metadata.get("cli", True) and not f.metadata.get("positional"):
            return f"{flag(name)}{head[len(name) :]}{sep}{rest}"
    return message
