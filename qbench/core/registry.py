"""Registries of tasks and models: decorators for built-ins, Python entry points
(`qbench.tasks`, `qbench.models`, and `qbench.task_files` naming task YAML files) for installed
plugins, and `include(path)` for a user's Python or task YAML file."""
from __future__ import annotations

import importlib.util
import os
import sys
import types
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar, cast

from qbench.core.model import Model, ModelConfig, ModelError
from qbench.core.task import Task

TASKS: dict[str, type[Task]] = {}
MODELS: dict[str, type[Model]] = {}
# Families addressed as "family:member" (pyiqa:piqe, openai:gpt-4o): classes built as
# cls(member, config).
MODEL_FAMILIES: dict[str, type[Model]] = {}

T = TypeVar("T", bound=type[Task])
M = TypeVar("M", bound=type[Model])


class RegistryError(Exception):
    """Unknown name or a plugin that cannot be loaded; one line."""


def _claim(registry: dict[str, Any], name: str, cls: type, what: str) -> None:
    """Register `cls` under `name` once: a second class under a name already taken is refused
    (the same class again, from a module imported twice, is not a second one)."""
    held = registry.get(name)
    if held is not None and _origin(held) != _origin(cls):
        raise RegistryError(f"{what} name {name!r} is taken by "
                            f"{held.__module__}.{held.__qualname__}; "
                            f"{cls.__module__}.{cls.__qualname__} needs another name")
    registry[name] = cls


def _origin(cls: type) -> tuple[str, str]:
    """Where a class is defined: its file (a module imported under two names is one file) and
    its qualified name."""
    module = sys.modules.get(cls.__module__)
    return (str(getattr(module, "__file__", None) or cls.__module__), cls.__qualname__)


def register_task(cls: T) -> T:
    """Class decorator: make a Task subclass available under its `name`."""
    name = getattr(cls, "name", "")
    if not name:
        raise RegistryError(f"task class {cls.__qualname__} has no name")
    _claim(TASKS, name, cls, "task")
    return cls


def register_model(name: str, *, family: bool = False) -> Callable[[M], M]:
    """Class decorator: make a Model subclass available under `name`. With `family=True` the
    class is built as cls(member, config) and serves every name "name:member"."""
    def decorate(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, Model)):
            raise RegistryError(f"register_model({name!r}) decorates a Model subclass, not "
                                f"{getattr(cls, '__qualname__', cls)!r}")
        _claim(MODEL_FAMILIES if family else MODELS, name, cls, "model")
        return cls
    return decorate


_loaded = False
TASK_FILES_GROUP = "qbench.task_files"
TASK_FILE_SUFFIXES = (".yaml", ".yml")


def is_task_file(path: str | Path) -> bool:
    """A task YAML file (qbench.tasks.yaml_task), by its name."""
    return str(path).lower().endswith(TASK_FILE_SUFFIXES)


def load_plugins() -> None:
    """Import every installed plugin (once): the entry points of `qbench.tasks` and
    `qbench.models` (qbench's own benchmarks and models among them: they register themselves
    like any other plugin), then the task files `qbench.task_files` names."""
    global _loaded
    if _loaded:
        return
    for group in ("qbench.tasks", "qbench.models", TASK_FILES_GROUP):
        for entry in metadata.entry_points(group=group):
            try:
                loaded = entry.load()
                if group == TASK_FILES_GROUP:   # a YAML file or folder, or a package holding them
                    for path in entry_point_files(loaded):
                        _read_task_file(path)
            except Exception as exc:
                raise RegistryError(f"plugin {entry.name!r} ({entry.value}) failed to load: "
                                    f"{type(exc).__name__}: {exc}") from exc
    # only now: a failed import must fail again next time, not leave a partial registry
    _loaded = True


# Turns a task file into a registered task and returns its name: set by the plugin that reads
# task files (qbench.tasks.yaml_task), so that the registry names no plugin.
_task_file_reader: Callable[[Path], str] | None = None


def set_task_file_reader(reader: Callable[[Path], str]) -> None:
    global _task_file_reader
    _task_file_reader = reader


def _read_task_file(path: Path) -> str:
    if _task_file_reader is None:
        raise RegistryError(f"task file {path}: no installed plugin reads task files "
                            "(qbench's own tasks are not installed?)")
    return _task_file_reader(path)


def entry_point_files(target: object) -> list[Path]:
    """The task files an entry point of `qbench.task_files` names: the object it loads is a
    path (str or os.PathLike) to a YAML file or a folder of them, or a package whose folder
    holds them."""
    if isinstance(target, types.ModuleType) and getattr(target, "__path__", None):
        target = list(target.__path__)[0]
    if not isinstance(target, (str, os.PathLike)):
        raise RegistryError(f"expected a path to a task YAML file or folder, or a package, got "
                            f"{type(target).__name__}")
    return task_files(Path(target))


def task_files(path: Path) -> list[Path]:
    """`path` itself, or the task files directly in the folder `path`."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if is_task_file(p))
    if not path.exists():
        raise RegistryError(f"task file {path}: not found")
    return [path]


_included: set[Path] = set()


def include(path: str | Path) -> None:
    """Import a user's Python file and register a task YAML file (or every .py, .yaml and .yml
    file in a folder). A file already included is not run again (`--include` may come before
    and after the verb, and again in the run's own settings)."""
    path = Path(path).expanduser()
    files = (sorted(f for f in path.iterdir() if f.suffix == ".py" or is_task_file(f))
             if path.is_dir() else [path])
    if not path.exists() or not files:
        raise RegistryError(f"--include {path}: no such Python or task YAML file, or folder "
                            f"of them")
    for file in files:
        if is_task_file(file):
            include_task_file(file)
            continue
        if file.resolve() in _included:
            continue
        _included.add(file.resolve())
        module_name = f"qbench_include_{file.stem}_{abs(hash(str(file.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:
            raise RegistryError(f"--include {file}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise RegistryError(f"--include {file}: {type(exc).__name__}: {exc}") from exc


def include_task_file(path: str | Path) -> str:
    """Register the task a YAML file defines (after the installed tasks, so that a clash with
    one is seen) and return its name; the same file again is a no-op."""
    load_plugins()
    return _read_task_file(Path(path).expanduser())


def task_names(names: list[str]) -> list[str]:
    """The tasks a command names: `all` means every registered task that takes part in full
    runs (demos excluded); a name ending .yaml/.yml is a task file, registered under the name
    it defines."""
    load_plugins()
    out: list[str] = []
    for name in names:
        chosen = ([t for t, cls in sorted(TASKS.items()) if cls.in_all] if name == "all" else
                  [include_task_file(name)] if is_task_file(name) else [name])
        out += [t for t in chosen if t not in out]
    return out


def get_task(name: str, options: dict[str, Any] | None = None) -> Task:
    """A task by name, configured with its `--task-arg` options."""
    load_plugins()
    if name not in TASKS:
        raise RegistryError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name](options)


def create_model(name: str, config: ModelConfig | None = None) -> Model:
    """Build a model by name: `stats`, `qinsight`, `pyiqa:piqe`, ..."""
    load_plugins()
    config = config or ModelConfig()
    if name in MODELS:
        return MODELS[name](config)
    family, _, member = name.partition(":")
    if member and family in MODEL_FAMILIES:
        # register_model(family=True) takes classes built as cls(member, config), a constructor
        # type[Model] cannot describe
        build = cast(Callable[[str, ModelConfig], Model], MODEL_FAMILIES[family])
        return build(member, config)
    known = sorted(MODELS) + [f"{f}:<name>" for f in sorted(MODEL_FAMILIES)]
    raise ModelError(f"unknown model {name!r}; known: {', '.join(known)}")


def model_class(name: str) -> type[Model] | None:
    load_plugins()
    return MODELS.get(name) or MODEL_FAMILIES.get(name.partition(":")[0])
