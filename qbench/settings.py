"""Where the user keeps datasets and weights: command-line flags override environment
variables ($QBENCH_DATA_ROOT, $QBENCH_MODEL_ROOT), which override the config file
($QBENCH_CONFIG, default ~/.config/qbench/config.yaml):

    data_root: /data/iqa            # one sub-folder per task (koniq/, spaq/, …)
    model_root: /models             # models' default folders (e.g. Q-Insight/score_degradation)
    data: {koniq: /mnt/koniq10k}    # one task's folder, anywhere
    models: {qinsight: /ckpt/q-insight}
    sources: lab-sources.yaml       # replaces catalog entries of `qbench fetch` (qbench.sources)

Without any of them the data root is $QBENCH_CACHE/data (~/.cache/qbench/data), where
`qbench fetch` puts what it fetches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml


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


KEYS = ("data_root", "model_root", "data", "models", "sources")


def config_path() -> Path:
    return Path(os.environ.get("QBENCH_CONFIG", "~/.config/qbench/config.yaml")).expanduser()


@lru_cache(maxsize=None)
def _read(path: Path, mtime: float) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"config file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {path}: expected a mapping of settings")
    unknown = set(loaded) - set(KEYS)
    if unknown:
        raise ValueError(f"config file {path}: unknown keys {sorted(unknown)} "
                         f"(known: {', '.join(KEYS)})")
    for key in ("data", "models"):
        if not isinstance(loaded.get(key, {}), dict):
            raise ValueError(f"config file {path}: '{key}' must map names to paths")
    if not isinstance(loaded.get("sources", ""), str | None):
        raise ValueError(f"config file {path}: 'sources' must be the path of a sources file")
    return loaded



def user_settings() -> UserSettings:
    path = config_path()
    file = _read(path, path.stat().st_mtime) if path.is_file() else {}

    def as_path(value: object) -> Path | None:
        return Path(str(value)).expanduser() if value else None

    sources = as_path(file.get("sources"))
    return UserSettings(
        data_root=as_path(os.environ.get("QBENCH_DATA_ROOT") or file.get("data_root"))
        or cache_root() / "data",
        model_root=as_path(os.environ.get("QBENCH_MODEL_ROOT") or file.get("model_root")),
        data={k: Path(str(v)).expanduser() for k, v in (file.get("data") or {}).items()},
        models={k: Path(str(v)).expanduser() for k, v in (file.get("models") or {}).items()},
        sources=path.parent / sources if sources is not None else None,
        source=str(path) if file else None)


def weights_path(model: str, weights_folder: str | None,
                 explicit: Path | None = None) -> Path | None:
    """A model's weights: --model-path, else the config's `models` entry, else its default
    folder under the model root when it exists, else the copy `qbench fetch` verified in the
    Hugging Face cache, else the default folder (absent: the error names it)."""
    if explicit is not None:
        return explicit
    settings = user_settings()
    if model in settings.models:
        return settings.models[model]
    default = settings.model_root / weights_folder if weights_folder and settings.model_root \
        else None
    if default is not None and default.exists():
        return default
    from .fetch import fetched_weights
    return fetched_weights(model) or default
