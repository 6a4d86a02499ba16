"""Options, declared once on dataclasses.

- Command-line options of the config dataclasses (RunConfig, ...): a field made with
  `option(...)` carries its flag, help text and parser; `add_options` / `from_args` turn the
  dataclass into argparse options and back. Adding a run option is one field in RunConfig.
- A model's `--model-arg key=value` and a task's `--task-arg task.key=value` pairs, read into
  the typed dataclass the model or task declares (`parse_options`): unknown keys and values of
  the wrong type are one-line errors naming the accepted keys, never a silent default.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class NoOptions:
    """The options of a model or task that takes none."""


@dataclass(frozen=True)
class Flag:
    flag: str
    help: str = ""
    parse: Callable[[str], Any] | None = None            # one value from its text
    repeated: Callable[[list[str]], Any] | None = None   # the value from every occurrence
    metavar: str | None = None
    negate: bool = False   # a switch that sets False: `--no-progress` for progress=True


def option(default: Any = dataclasses.MISSING, *, flag: str, help: str = "",
           parse: Callable[[str], Any] | None = None,
           repeated: Callable[[list[str]], Any] | None = None, metavar: str | None = None,
           negate: bool = False, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field that is also a command-line option."""
    meta = {"flag": Flag(flag, help, parse, repeated, metavar, negate)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flags(cls: type) -> list[tuple[dataclasses.Field, Flag]]:
    return [(f, f.metadata["flag"]) for f in dataclasses.fields(cls) if "flag" in f.metadata]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def add_options(parser: argparse.ArgumentParser, cls: type, *,
                only: Iterable[str] | None = None) -> None:
    """argparse options for the fields of `cls` declared with `option` (or just `only`)."""
    wanted = set(only) if only is not None else None
    for f, spec in flags(cls):
        if wanted is not None and f.name not in wanted:
            continue
        default = _default(f)
        text = ",".join(map(str, default)) if isinstance(default, list) else default
        shown = f" (default {text})" if default not in (None, [], {}, False, True) else ""
        if spec.negate or isinstance(default, bool):
            parser.add_argument(spec.flag, dest=f.name, action="store_false" if spec.negate
                                else "store_true", help=spec.help)
        elif spec.repeated is not None:
            parser.add_argument(spec.flag, dest=f.name, action="append", default=[],
                                metavar=spec.metavar, help=spec.help)
        else:
            parser.add_argument(spec.flag, dest=f.name, type=spec.parse or str, default=default,
                                metavar=spec.metavar, help=spec.help + shown)


def from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """An instance of `cls` from parsed arguments (fields it has no flag for keep their
    defaults unless `overrides` names them)."""
    values: dict[str, Any] = {}
    for f, spec in flags(cls):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        values[f.name] = spec.repeated(value) if spec.repeated is not None else value
    return cls(**(values | overrides))


# ------------------------------------------------------------------------------ value parsers

def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard expects i/n, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= i < n")
    return index, count


def names(text: str) -> list[str]:
    """A comma-separated list: `koniq,spaq`."""
    return [t.strip() for t in text.split(",") if t.strip()]


def key_values(pairs: list[str], flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def value_of(text: str) -> Any:
    """An option value as the CLI reads it: int, float, true/false/none, else text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def model_args(pairs: list[str]) -> dict[str, Any]:
    return {k: value_of(v) for k, v in key_values(pairs, "--model-arg").items()}


def task_args(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """`--task-arg TASK.KEY=VALUE` pairs by task."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in key_values(pairs, "--task-arg").items():
        task, dot, name = key.partition(".")
        if not dot or not task or not name:
            raise ValueError(f"--task-arg expects TASK.KEY=VALUE, got {key}={value}")
        out.setdefault(task, {})[name] = value_of(value)
    return out


def task_paths(pairs: list[str]) -> dict[str, Path]:
    return {k: Path(v).expanduser() for k, v in key_values(pairs, "--data").items()}


def paths(values: list[str]) -> list[Path]:
    return [Path(v).expanduser() for v in values]


def require_existing(args: argparse.Namespace, may_be_created: Iterable[str] = ()) -> None:
    """The paths a user typed (--data-root, --model-path, --data TASK=PATH) exist: a typo is one
    line naming the flag, not a task skipped as "not found" or a model folder "without
    config.json". (Defaults from the environment or the config file are not checked here.)"""
    given = [("--data-root", getattr(args, "data_root", None)),
             ("--model-path", getattr(args, "model_path", None))]
    given += [(f"--data {pair.partition('=')[0]}", Path(pair.partition("=")[2]).expanduser())
              for pair in getattr(args, "data_paths", None) or [] if "=" in pair]
    for flag, path in given:
        if path is not None and flag not in may_be_created \
                and not Path(path).expanduser().exists():
            raise ValueError(f"{flag} {path}: no such file or folder")


# ------------------------------------------------------------------------------ typed options


def _coerce(value: Any, annotation: Any) -> Any:
    """`value` as the annotated type (int, float, bool, str, Path, a Literal, or X | None)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        annotation = members[0]
    if typing.get_origin(annotation) is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(map(str, allowed))}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError("expected true or false")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a number")
        return float(value)
    if annotation is Path:
        return Path(str(value)).expanduser()
    if annotation is str:
        return str(value)
    raise TypeError(f"unsupported option type {annotation!r}")


def parse_options(cls: type[T], options: dict[str, Any], owner: str, *, flag: str,
                  error: type[Exception]) -> T:
    """Build the options dataclass `cls` from `options` (already cast by the CLI to int, float,
    bool or str). Models read `--model-arg`s, tasks `--task-arg`s; `error` is what a bad one
    raises, one line naming `owner` and the accepted keys."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise error(f"{owner}: unknown {flag} {', '.join(unknown)}; accepted: "
                    f"{', '.join(names) or 'none'}")
    values = {}
    for key, value in options.items():
        try:
            values[key] = _coerce(value, hints[key])
        except ValueError as exc:
            raise error(f"{owner}: {flag} {key}={value}: {exc}") from None
    return cls(**values)
