"""`--model-arg key=value` pairs read into a typed dataclass: unknown keys and values of the wrong
type are one-line ModelErrors naming the accepted keys, never a silent default."""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from ..model import ModelError

T = TypeVar("T")


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


def parse_options(cls: type[T], options: dict[str, Any], owner: str, *,
                  flag: str = "--model-arg", error: type[Exception] = ModelError) -> T:
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
