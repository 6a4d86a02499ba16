"""Where the user keeps datasets and weights: command-line flags override environment
variables ($QBENCH_DATA_ROOT, $QBENCH_MODEL_ROOT), which override the config file
($QBENCH_CONFIG, default ~/.config/qbench/config.yaml):

    data_root: /data/iqa            # one sub-folder per task (koniq/, spaq/, …)
    model_root: /models             # models' default folders (e.g. Q-Insight/score_degradation)
    data: {koniq: /mnt/koniq10k}    # one task's folder, anywhere
    models: {qinsight: /ckpt/q-insight}
    sources: lab-sources.yaml       # replaces catalog entries of `qbench fetch`
                                    # (qbench.data.sources)

Without any of them the data root is $QBENCH_CACHE/data (~/.cache/qbench/data), where
`qbench fetch` puts what it fetches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from qbench.core.userfiles import UserFileError, describe, load_yaml, shown


def _text(value: Any) -> Any:
    """A path is written as text (YAML would read `data_root: {a: 1}` or `data_root: 12`)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"should be a path (text), got {shown(value)}")
    return value


UserPath = Annotated[Path, BeforeValidator(_text), AfterValidator(Path.expanduser)]


class ConfigFile(BaseModel):
    """The keys of the config file, checked when it is read: one line naming the file and the
    key. A new setting is one more field here (and in UserSettings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_root: UserPath | None = None
    model_root: UserPath | None = None
    data: dict[str, UserPath] = Field(default_factory=dict)     # task name -> its folder
    models: dict[str, UserPath] = Field(default_factory=dict)   # model name -> its weights
    sources: UserPath | None = None   # a sources file for `qbench fetch` (relative: to this file)

    @field_validator("data", "models", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value   # `data:` with every entry commented out


def cache_root() -> Path:
    """qbench's own cache ($QBENCH_CACHE, default ~/.cache/qbench)."""
    return Path(os.environ.get("QBENCH_CACHE", "~/.cache/qbench")).expanduser()


@dataclass(frozen=True)
class UserSettings:
    data_root: Path = field(default_factory=lambda: cache_root() / "data")
    model_root: Path | None = None
    data: dict[str, Path] = field(default_factory=dict)
    models: dict[str, Path] = field(default_factory=dict)
    sources: Path | None = None  # a sources file replacing catalog entries (relative: to the file)
    source: str | None = None  # the config file read, if any




def config_path() -> Path:
    return Path(os.environ.get("QBENCH_CONFIG", "~/.config/qbench/config.yaml")).expanduser()


@cache
def read_config(path: Path, mtime_ns: int) -> ConfigFile:
    """The config file's settings (cached while the file is unchanged); UserFileError, one
    line naming the file and the key."""
    where = f"config file {path}"
    loaded = load_yaml(path, "config file")
    if loaded is None:
        return ConfigFile()
    if not isinstance(loaded, dict):
        raise UserFileError(where, f"expected a mapping of settings "
                                   f"({', '.join(ConfigFile.model_fields)}), got "
                                   f"{type(loaded).__name__}")
    try:
        return ConfigFile.model_validate(loaded)
    except ValidationError as exc:
        raise UserFileError(where, describe(exc, ConfigFile)) from None



def user_settings() -> UserSettings:
    path = config_path()
    try:
        mtime_ns = path.stat().st_mtime_ns
    except FileNotFoundError:   # no config file: flags and environment only
        mtime_ns = None
    file = read_config(path, mtime_ns) if mtime_ns is not None else ConfigFile()
    environment = {key: Path(value).expanduser() for key in ("data_root", "model_root")
                   if (value := os.environ.get(f"QBENCH_{key.upper()}"))}
    sources = file.sources
    if sources is not None and not sources.is_absolute():
        sources = path.parent / sources   # relative to the config file
    return UserSettings(
        data_root=environment.get("data_root", file.data_root) or cache_root() / "data",
        model_root=environment.get("model_root", file.model_root),
        data=dict(file.data), models=dict(file.models), sources=sources,
        source=str(path) if mtime_ns is not None else None)


