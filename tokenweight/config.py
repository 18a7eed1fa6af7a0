"""Typed stage configs: one dataclass per stage, the single source of its options.

Every stage of the pipeline (prepare, score, pretrain, train, evaluate, report) takes one config,
a dataclass derived from :class:`StageConfig` whose fields are declared with :func:`option`. A
field carries its default, its help text and, when it has one, its set of valid values. From that
one declaration come:

- the Python API: ``TrainConfig(model="m", data="d", out="o")`` then ``train(config)``;
- the YAML configs: a mapping of field names (dashes or underscores), :meth:`StageConfig.from_dict`,
  unknown keys refused;
- the command line: ``tokenweight <stage> --field-name VALUE`` (``tokenweight.cli.options``
  derives each flag from the field, so a name is the same in YAML and on the command line).

``validate()`` raises ``ValueError`` naming the field, the value and the valid range; the CLI turns
it into one line and exit code 2 in one place. The checks below (:func:`check_int`,
:func:`check_float`, ...) are the one source of each range rule.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from tokenweight.runtime import ATTN_IMPLEMENTATIONS, RUNTIME_DTYPES

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    factory: Any = _MISSING,
    choices: tuple | None = None,
    metavar: str | None = None,
    positional: bool = False,
    group: str | None = None,
    cli: bool = True,
) -> Any:
    """A config field with its help text (``choices``: the valid values; ``positional``: a CLI
    argument without a flag; ``cli=False``: settable from Python and YAML only)."""
    meta = {"help": help, "choices": choices, "metavar": metavar, "positional": positional, "group": group, "cli": cli}
    if factory is not _MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class StageConfig:
    """Base of the stage configs (a mixin for ``@dataclass`` classes)."""

    def validate(self) -> None:  # pragma: no cover - every stage overrides it
        """Raise ``ValueError`` naming the field, the value and its valid range."""

    def check(self) -> None:
        """:meth:`validate`, with its ``ValueError`` as a :class:`~tokenweight.errors.ConfigError`:
        what every stage function calls first, the one place a config is checked (the CLI only
        translates the error into a one-line message naming the flag)."""
        from tokenweight.errors import ConfigError

        try:
            self.validate()
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(str(e), type(self)) from None

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    @classmethod
    def from_dict(cls, values: dict, *, source: str = "config") -> StageConfig:
        """A config from a mapping of field names (dashes or underscores); unknown keys are refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        clean = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(clean) - names)
        if unknown:
            raise ValueError(
                f"unknown option(s) in {source}: {', '.join(unknown)}; valid options: {', '.join(sorted(names))}"
            )
        types = cls.field_types()
        return cls(**{k: coerce(v, types[k], k) for k, v in clean.items()})

    def given(self, values: dict) -> dict:
        """This config's values of the fields named in ``values`` (after coercion)."""
        return {k: getattr(self, k) for k in values}

    def to_dict(self) -> dict:
        """The fields as JSON-ready values (tuples become lists)."""
        return json_ready(dataclasses.asdict(self))

    def replace(self, **changes) -> StageConfig:
        return dataclasses.replace(self, **changes)


#: the argument group of the runtime options in ``--help``
RUNTIME_GROUP = "runtime (where and how models run)"


@dataclasses.dataclass
class RuntimeOptions:
    """The runtime options, the same on every stage that runs a model (score, pretrain, train,
    eval, demo; ``tokenweight show`` has the same flags): a mixin of the stage configs
    (``class ScoreConfig(RuntimeOptions, StageConfig)``). The rules (what runs where, what ``auto``
    means) live once, in :func:`tokenweight.runtime.resolve_runtime`; :meth:`runtime` applies them.
    ``RUNTIME_TRAINING``: the stage trains, so ``dtype`` is mixed precision (float32 master weights).
    """

    RUNTIME_TRAINING: typing.ClassVar[bool] = False

    device: str = option(
        "auto", "torch device: auto (cuda when present, else cpu), cpu, cuda, cuda:N", group=RUNTIME_GROUP
    )
    dtype: str = option(
        "float32",
        "compute dtype of the model (on CPU: float32 and bfloat16; float16 for inference only)",
        choices=RUNTIME_DTYPES,
        group=RUNTIME_GROUP,
    )
    attn_implementation: str = option(
        "auto",
        "attention: auto = the best the model supports (flash_attention_2 with the flash_attn package on CUDA "
        "in 16-bit, else sdpa, else eager)",
        choices=ATTN_IMPLEMENTATIONS,
        group=RUNTIME_GROUP,
    )

    def runtime(self):
        """The checked :class:`tokenweight.runtime.Runtime` (ValueError naming the option)."""
        from tokenweight.runtime import resolve_runtime

        check_choice(self, "dtype")
        check_choice(self, "attn_implementation")
        return resolve_runtime(self.device, self.dtype, self.attn_implementation, training=self.RUNTIME_TRAINING)

    def validate_runtime(self) -> None:
        """Refuse a combination that cannot run here (``validate()`` of every config with these options)."""
        self.runtime()


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


# ----------------------------------------------------------------------------- value coercion


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True  # noqa: UP007
    return tp, False


def coerce(value: Any, tp: Any, name: str) -> Any:
    """``value`` (from YAML or a command line string) as the field's type; ValueError if it is not."""
    inner, optional = _strip_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if optional:
            return None
        raise ValueError(f"{name} must be set, got None")
    origin = typing.get_origin(inner)
    if origin in (list, tuple):
        (item,) = typing.get_args(inner)[:1] or (str,)
        items = value if isinstance(value, (list, tuple)) else [x for x in str(value).split(",") if x.strip()]
        return [coerce(x.strip() if isinstance(x, str) else x, item, name) for x in items]
    if inner is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "1", "on"):
            return True
        if text in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if inner is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if inner is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if inner is str:
        return str(value)
    return value


# ----------------------------------------------------------------------------- range rules


def check_int(config: Any, name: str, low: int, *, optional: bool = False, high: int | None = None) -> None:
    """``config.name`` is an integer in ``[low, high]`` (or None when ``optional``)."""
    v = getattr(config, name)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        none = " or None" if optional else ""
        raise ValueError(f"{name} must be an integer {rng}{none}, got {v!r}")


def check_float(
    config: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> None:
    """``config.name`` is a finite number within the given bounds (open or closed)."""
    v = getattr(config, name)
    if v is None and optional:
        return
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
        if low is not None and high is not None:
            rng = f"in {lo}, {hi}"
        elif low is not None:
            rng = f"{'>' if low_open else '>='} {low:g}"
        else:
            rng = f"{'<' if high_open else '<='} {high:g}"
        raise ValueError(f"{name} must be {rng}, got {v!r}")


def check_choice(config: Any, name: str, choices: tuple | None = None) -> None:
    """``config.name`` is one of the field's declared choices (or ``choices``)."""
    if choices is None:
        field = next(f for f in dataclasses.fields(config) if f.name == name)
        choices = field.metadata.get("choices")
    v = getattr(config, name)
    if choices and v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {v!r}")


def check_required(config: Any, *names: str, usage: str = "") -> None:
    """Every field in ``names`` is set (not None or empty)."""
    for name in names:
        if getattr(config, name) in (None, "", [], ()):
            raise ValueError(f"{name} is required{': ' + usage if usage else ''}")
