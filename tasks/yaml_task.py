"""Tasks defined by a YAML file instead of Python: `--tasks my.yaml`, every *.yaml/*.yml of an
`--include` folder, and the files that installed packages name in the `qbench.task_files`
entry-point group. For example:

    name: my-set
    kind: score                  # score | degradation | comparison
    data: annotations.csv        # CSV, JSON, JSONL, Parquet or a saved `datasets` folder
    images: images/              # what the image paths in `data` are relative to
    columns: {image: path, score: mos}
    split_column: split          # optional; without it, one split named test
    lower_better: false
    score_range: [1, 5]          # optional; rows outside are dropped and counted
    expected_count: {test: 120}  # optional

`data` and `images` are relative to the YAML file's folder (default `images`: that folder).
The annotations are read with the `datasets` library, fully in memory, through a temporary
cache that is removed afterwards: nothing is downloaded and nothing is left in the user's home.

The YAML is checked (pydantic) when the task is registered, with the annotation file's header
and split values when the file is there: every problem is one line naming the YAML file and the
key. A registered YAML task is a Task like the built-in ones: the same TaskData (split and what
defined it, direction, scale, dropped and repeated rows with their notes), metrics, intervals,
report, data check, and the refusal of image paths that leave the `images` folder.
"""
from __future__ import annotations

import os
import re
import tempfile
import types
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from qbench import DataError, DataNotFound, Sample, Task, TaskData
from qbench.core.kinds import kind_of
from qbench.core.protocol import canonical_class, canonical_level, parse_choice
from qbench.core.registry import TASKS, RegistryError, register_task, set_task_file_reader
from qbench.core.userfiles import UserFileError, describe, load_yaml, shown, shown_key, shown_names
from qbench.tasks._formats import (
    ScoreRow,
    keep_first,
    relative_id,
    rescale,
    safe_path,
    usable_score,
)

DEFAULT_SPLIT = "test"

# Per kind: the column roles a task file must map, and those it may map.
REQUIRED_ROLES: dict[str, tuple[str, ...]] = {
    "score": ("image", "score"),
    "degradation": ("image", "class", "level"),
    "comparison": ("reference", "image_a", "image_b", "choice"),
}
OPTIONAL_ROLES: dict[str, tuple[str, ...]] = {"score": (), "degradation": (), "comparison": ("id",)}

# Annotation formats by file suffix: the `datasets` builder that reads them.
BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


# ------------------------------------------------------------------------------ the YAML schema

class TaskSpec(BaseModel):
    """The keys of a task file. Paths stay as written; they are resolved against the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[StrictStr, Field(max_length=100)]
    kind: Literal["score", "degradation", "comparison"]
    data: Annotated[StrictStr, Field(min_length=1)]
    images: Annotated[StrictStr, Field(min_length=1)] | None = None
    columns: dict[StrictStr, StrictStr]
    split_column: StrictStr | None = None
    default_split: StrictStr | None = None
    lower_better: StrictBool = False
    score_range: tuple[FiniteFloat, FiniteFloat] | None = None
    expected_count: dict[StrictStr, Annotated[StrictInt, Field(ge=0)]] = Field(default_factory=dict)
    description: StrictStr = ""

    @field_validator("name")
    @classmethod
    def _usable_name(cls, name: str) -> str:
        """A name that --tasks, --data TASK=PATH and --task-arg TASK.KEY=VALUE can carry."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
            raise ValueError(f"should be letters, digits, '-' and '_' (got {shown(name)})")
        if name == "all":
            raise ValueError("'all' stands for every task in --tasks; choose another name")
        return name

    @field_validator("score_range", mode="before")
    @classmethod
    def _pair(cls, bounds: Any) -> Any:
        if bounds is not None and not (isinstance(bounds, (list, tuple)) and len(bounds) == 2):
            raise ValueError(f"should be [low, high], got {shown(bounds)}")
        return bounds

    @field_validator("score_range")
    @classmethod
    def _ordered(cls, bounds: tuple[float, float] | None) -> tuple[float, float] | None:
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"should be [low, high] with low < high, got {list(bounds)}")
        return bounds

    @model_validator(mode="after")
    def _fits_kind(self) -> TaskSpec:
        required, optional = REQUIRED_ROLES[self.kind], OPTIONAL_ROLES[self.kind]
        missing = [r for r in required if r not in self.columns]
        unknown = [r for r in self.columns if r not in required + optional]
        roles = ", ".join(required) + (f" (optional: {', '.join(optional)})" if optional else "")
        if missing or unknown:
            what = "; ".join(filter(None, [
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(unknown)}" if unknown else ""]))
            raise SpecError("columns", f"{what}; a {self.kind} task maps the roles {roles} to "
                                       f"column names")
        if self.kind != "score":
            for key, what in (("score_range", "a score range"), ("lower_better", "a direction")):
                if getattr(self, key) not in (None, False):
                    raise SpecError(key, f"only score tasks have {what} (this is a {self.kind} "
                                         f"task)")
        return self


class SpecError(ValueError):
    """A problem that belongs to one key (pydantic reports the whole model otherwise)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")


def read_spec(path: Path) -> TaskSpec:
    """The validated keys of a task file; RegistryError (one line naming file and key)."""
    try:
        raw = load_yaml(path, "task file")
    except UserFileError as exc:
        raise RegistryError(str(exc)) from None
    if not isinstance(raw, dict):
        keys = ", ".join(TaskSpec.model_fields)
        raise RegistryError(f"task file {path}: expected a mapping of keys ({keys}), "
                            f"got {type(raw).__name__}")
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as exc:
        raise RegistryError(f"task file {path}: {describe(exc, TaskSpec)}") from None


# ------------------------------------------------------------------------------ annotations

@dataclass(frozen=True)
class Annotations:
    """The rows of an annotation file, in file order. `parts` is the split a saved DatasetDict
    puts each row in (None for a single table), aligned with `rows`."""

    path: Path
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    parts: list[str | None]

    @property
    def named_splits(self) -> list[str]:
        """The splits of a saved DatasetDict, in its order; [] for a single table."""
        return list(dict.fromkeys(p for p in self.parts if p is not None))


def read_annotations(path: Path) -> Annotations:
    """A CSV/TSV, JSON (a list of records), JSONL or Parquet file, or a folder written by
    `Dataset.save_to_disk` / `DatasetDict.save_to_disk`; DataError naming the file."""
    import datasets
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise DataError(f"{path}: not a folder saved by the datasets library "
                            f"(save_to_disk): {str(exc).splitlines()[0]}") from None
        tables = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
        return _from_tables(path, list(tables))
    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(f"{path}: cannot read {path.suffix or 'suffix-less'} files; use CSV, TSV, "
                        f"JSON, JSONL, Parquet or a folder saved with the datasets library")
    options: dict[str, Any] = {}
    if builder == "csv":
        # every cell as text, verbatim: chunk-wise type guessing must not fail on one odd cell,
        # and "null" / "None" (the protocol's words for no distortion) must not become missing
        options = {"sep": "\t" if path.suffix.lower() == ".tsv" else ",",
                   "skipinitialspace": True, "keep_default_na": False}
        options["features"] = datasets.Features(
            {name: datasets.Value("string") for name in _csv_header(path, options["sep"])})
    was_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        with tempfile.TemporaryDirectory(prefix="qbench-datasets-") as cache:
            table = datasets.load_dataset(builder, data_files=str(path), split="train",
                                          cache_dir=cache, keep_in_memory=True, **options)
    except Exception as exc:   # the builders raise many types (arrow, pandas, json); all one line
        cause = exc.__cause__ or exc
        first = (str(cause).strip().splitlines() or [""])[0]
        raise DataError(f"{path}: not a readable {builder.upper()} file: "
                        f"{type(cause).__name__}: {first}") from None
    finally:
        if not was_disabled:
            datasets.utils.enable_progress_bars()
    return _from_tables(path, [(None, table)])


def _csv_header(path: Path, sep: str) -> list[str]:
    import pandas as pd
    try:
        return [str(c) for c in pd.read_csv(path, sep=sep, nrows=0, skipinitialspace=True).columns]
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV: {str(exc).splitlines()[0]}") from None


def _from_tables(path: Path, tables: list[tuple[str | None, Any]]) -> Annotations:
    columns = list(dict.fromkeys(c for _, t in tables for c in t.column_names))
    rows, parts = [], []
    for part, table in tables:
        lacking = [c for c in columns if c not in table.column_names]
        if lacking:
            raise DataError(f"{path}: split {part!r} lacks the column(s) {', '.join(lacking)}")
        records = table.to_list()
        rows += records
        parts += [part] * len(records)
    return Annotations(path, tuple(columns), rows, parts)


# ------------------------------------------------------------------------------ reading rows

def _text(value: Any) -> str | None:
    """A cell as text, None when blank (a missing cell must never read as a default)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def canonical_choice(value: Any) -> str | None:
    """'Image A' | 'Image B' | 'Similar' from the protocol's spellings and a bare A or B."""
    text = _text(value)
    if text is None:
        return None
    bare = {"a": "Image A", "b": "Image B"}.get(text.lower())
    return bare or parse_choice(text.replace("_", " ").replace("-", " ")).choice


class Dropped(Exception):
    """A row that cannot be used; its message is the reason, counted in the notes."""


@dataclass
class Rows:
    """Every usable row of the file by split, and the reasons for the others."""

    by_split: dict[str, list[Any]] = field(default_factory=dict)   # ScoreRow or Sample
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)   # unreadable words, a few each

    def drop(self, reason: str, example: str | None = None) -> None:
        self.reasons[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if example is not None and example not in shown and len(shown) < 3:
            shown.append(example)

    def note(self, read: int, source: Path) -> list[str]:
        if not self.reasons:
            return []
        why = ", ".join(f"{n} {reason}" + (f" (e.g. {', '.join(map(repr, self.examples[reason]))})"
                                            if self.examples.get(reason) else "")
                        for reason, n in self.reasons.items())
        return [f"dropped {sum(self.reasons.values())} of {read} rows of {source}: {why}"]


def keep_first_samples(samples: list[Sample], source: Path) -> tuple[list[Sample], int, list[str]]:
    """One sample per id, the first listed (the rule of tasks._formats.keep_first, for answers
    that are labels rather than scores): the samples, how many ids were repeated, a note."""
    first: dict[str, Sample] = {}
    extra: dict[str, list[Sample]] = {}
    for sample in samples:
        if sample.id in first:
            extra.setdefault(sample.id, []).append(sample)
        else:
            first[sample.id] = sample
    if not extra:
        return samples, 0, []
    truth = kind_of(samples[0].kind).truth_text
    differ = [i for i, more in extra.items() if any(truth(s) != truth(first[i]) for s in more)]
    shown = "; ".join(f"{i} ({', '.join(truth(s) for s in [first[i], *extra[i]])})"
                      for i in list(extra)[:3])
    note = (f"{len(extra)} samples listed more than once in {source} ({len(differ)} with a "
            f"different answer); kept the first row of each: {shown}")
    return list(first.values()), len(extra), [note]


# ------------------------------------------------------------------------------ the task

class YamlTask(Task):
    """Base of the classes built from task files (`task_class`); the class attributes are the
    validated spec, the resolved paths and the annotation rows read when it was registered."""

    spec: ClassVar[TaskSpec]
    task_file: ClassVar[Path]
    data_path: ClassVar[Path]
    images_root: ClassVar[Path]
    annotations: ClassVar[Annotations | None]    # None: the data file was not there

    def split_help(self, split: str) -> str:
        count = self.expected_count.get(split)
        return self.split_source(split) + (f" (expected {count:,})" if count is not None else "")

    def split_source(self, split: str) -> str:
        data = self.spec.data
        if self.spec.split_column:
            return f"rows of {data} whose column {self.spec.split_column!r} is {split!r}"
        if self.annotations is not None and self.annotations.named_splits:
            return f"split {split!r} of the saved dataset {data}"
        return f"every row of {data}"

    def locate(self, data_root: Path | None, override: Path | None = None) -> Path:
        """The images folder: a task file says where its files are, the data root does not."""
        if override is not None:
            raise DataError(f"{self.name}: defined by {self.task_file}, whose `data` and `images` "
                            f"keys say where its files are; --data / the config's `data:` do not "
                            f"apply (got {override})")
        if self.annotations is None:
            raise DataNotFound(f"{self.name}: {self.data_path} not found "
                               f"(`data` of {self.task_file})")
        if not self.images_root.is_dir():
            raise DataNotFound(f"{self.name}: images folder {self.images_root} not found "
                               f"(`images` of {self.task_file})")
        return self.images_root

    def load(self, folder: Path, split: str) -> TaskData:
        table = self.annotations
        if table is None:
            raise DataNotFound(f"{self.name}: {self.data_path} not found")
        if split not in self.splits:
            raise DataError(f"{self.name}: no split {split!r} (has: {', '.join(self.splits)})")
        rows = Rows()
        read_row = {"score": self.score_row, "degradation": self.degradation_row,
                    "comparison": self.comparison_row}[self.kind]
        for index, (row, part) in enumerate(zip(table.rows, table.parts, strict=True)):
            try:
                row_split = self.split_of(row, part)
                item = read_row(row, folder, row_split, index)
            except Dropped as reason:
                rows.drop(*reason.args)
                continue
            rows.by_split.setdefault(row_split, []).append(item)
        notes = rows.note(len(table.rows), self.data_path)
        repeated = 0
        for name, items in rows.by_split.items():
            keep = keep_first if self.kind == "score" else keep_first_samples
            rows.by_split[name], count, repeat_notes = keep(items, self.data_path)
            repeated += count
            several = len(rows.by_split) > 1
            notes += [f"split {name}: {n}" if several else n for n in repeat_notes]
        samples = (self.score_samples(rows.by_split, split, folder) if self.kind == "score"
                   else rows.by_split.get(split, []))
        return TaskData(samples, notes, source=f"{self.data_path} (task file {self.task_file})",
                        split=split, split_source=self.split_source(split),
                        lower_better=self.spec.lower_better, mos_range=self.spec.score_range,
                        expected_count=self.expected_count.get(split),
                        rows_read=len(table.rows),
                        rows_dropped=sum(rows.reasons.values()) + repeated, repeated=repeated)

    # ------------------------------------------------------------------------ one row
    def column(self, role: str) -> str:
        return self.spec.columns[role]

    def split_of(self, row: dict[str, Any], part: str | None) -> str:
        if self.spec.split_column:
            value = _text(row[self.spec.split_column])
            if value is None:
                raise Dropped(f"without a value in the split column "
                              f"{shown(self.spec.split_column)}")
            return value
        return part or DEFAULT_SPLIT

    def image(self, row: dict[str, Any], role: str, root: Path) -> Path:
        """An image path of the row, under `root`; DataError (the whole task) when it leaves it."""
        text = _text(row[self.column(role)])
        if text is None:
            raise Dropped(f"with no {role} path")
        return Path(os.path.normpath(safe_path(root, text, self.data_path)))

    def score_row(self, row: dict[str, Any], root: Path, split: str, index: int) -> ScoreRow:
        image = self.image(row, "image", root)
        value = row[self.column("score")]
        score = usable_score(value, None)
        if score is None:
            raise Dropped("with a missing or non-numeric score", _text(value))
        bounds = self.spec.score_range
        if bounds is not None and usable_score(score, bounds) is None:
            raise Dropped(f"with a score outside score_range [{bounds[0]:g}, {bounds[1]:g}]")
        return ScoreRow(image, score, split, meta={"row": index})

    def degradation_row(self, row: dict[str, Any], root: Path, split: str, index: int) -> Sample:
        image = self.image(row, "image", root)
        cls_word, level_word = _text(row[self.column("class")]), _text(row[self.column("level")])
        if cls_word is None or level_word is None:
            raise Dropped("without a class or level")
        cls, level = canonical_class(cls_word), canonical_level(level_word)
        if cls is None:
            raise Dropped("with a class the protocol does not know", cls_word)
        if level is None:
            raise Dropped("with a level the protocol does not know", level_word)
        if (cls == "null") != (level == "null"):
            raise Dropped("with a class and level that disagree on 'no distortion'",
                          f"{cls_word}/{level_word}")
        return Sample(id=relative_id(image, root), task=self.name, kind="degradation",
                      images=(str(image),), distortion_class=cls, severity=level,
                      meta={"split": split, "row": index})

    def comparison_row(self, row: dict[str, Any], root: Path, split: str, index: int) -> Sample:
        images = tuple(self.image(row, role, root) for role in ("reference", "image_a", "image_b"))
        word = row[self.column("choice")]
        choice = canonical_choice(word)
        if choice is None:
            raise Dropped("with a choice that is not Image A, Image B or Similar", _text(word))
        if "id" in self.spec.columns:
            sample_id = _text(row[self.column("id")])
            if sample_id is None:
                raise Dropped("without an id")
        else:
            sample_id = "|".join(relative_id(p, root) for p in images)
        return Sample(id=sample_id, task=self.name, kind="comparison",
                      images=tuple(map(str, images)), choice=choice,
                      meta={"split": split, "row": index})

    def score_samples(self, by_split: dict[str, list[ScoreRow]], split: str, root: Path
                      ) -> list[Sample]:
        """The split's samples, with [1, 5] scores rescaled over the whole file's kept rows
        (every split), as the built-in readers do."""
        every = [r for rows in by_split.values() for r in rows]
        if not every:
            return []
        try:
            scaled = rescale([r.mos for r in every], self.spec.lower_better)
        except DataError as exc:
            raise DataError(f"{self.data_path}: {exc}") from None
        norms = dict(zip(every, scaled, strict=True))
        return [Sample(id=relative_id(r.image, root), task=self.name, kind="score",
                       images=(str(r.image),), mos=r.mos, mos_norm=norms[r],
                       meta={"split": split, **r.meta})
                for r in by_split.get(split, [])]


# ------------------------------------------------------------------------------ registering

def task_class(path: Path) -> type[YamlTask]:
    """The Task class a task file defines, checked against its annotation file's header and
    split values when that file is there; RegistryError (one line naming file and key)."""
    spec = read_spec(path)
    base = path.parent
    data_path = Path(os.path.abspath(base / Path(spec.data).expanduser()))
    images_root = Path(os.path.abspath(base / Path(spec.images or ".").expanduser()))
    annotations = None
    if data_path.exists():
        try:
            annotations = read_annotations(data_path)
        except DataError as exc:
            raise RegistryError(f"task file {path}: data: {exc}") from None
    splits = check_columns(spec, annotations, path)
    default = spec.default_split or DEFAULT_SPLIT
    return types.new_class(f"YamlTask_{spec.name}", (YamlTask,), exec_body=lambda ns: ns.update(
        name=spec.name, kind=spec.kind, description=spec.description or f"task file {path}",
        lower_better=spec.lower_better, splits=tuple(splits or [default]), default_split=default,
        expected_count=dict(spec.expected_count), spec=spec, task_file=path.absolute(),
        data_path=data_path, images_root=images_root, annotations=annotations,
        __module__=__name__))


def check_columns(spec: TaskSpec, table: Annotations | None, path: Path) -> list[str]:
    """The splits of the task; every named column checked against the file's header."""
    if table is None:
        return []
    def fail(key: str, message: str) -> RegistryError:
        return RegistryError(f"task file {path}: {key}: {message}")
    found = shown_names(table.columns)
    for role, name in spec.columns.items():
        if name not in table.columns:
            raise fail(f"columns.{role}", f"no column {shown(name)} in {table.path} "
                                          f"(columns: {found})")
    if spec.split_column is not None:
        if table.named_splits:
            raise fail("split_column", f"{table.path} is a saved DatasetDict whose splits are "
                                       f"{shown_names(table.named_splits)}; remove "
                                       f"split_column")
        if spec.split_column not in table.columns:
            raise fail("split_column", f"no column {shown(spec.split_column)} in {table.path} "
                                       f"(columns: {found})")
        splits = sorted({v for row in table.rows if (v := _text(row[spec.split_column]))})
    else:
        splits = table.named_splits or [DEFAULT_SPLIT]
    if not splits:
        raise fail("split_column", f"column {shown(spec.split_column)} of {table.path} is "
                                   f"empty")
    default = spec.default_split or DEFAULT_SPLIT
    if default not in splits:
        key = "default_split" if spec.default_split else "split_column"
        raise fail(key, f"no split {shown(default)} in {table.path} (splits: "
                        f"{shown_names(splits)})"
                        + ("" if spec.default_split else "; name the split to evaluate by "
                                                          "default with default_split"))
    for name in spec.expected_count:
        if name not in splits:
            raise fail(f"expected_count.{shown_key(name)}", f"no split {shown(name)} in "
                                                            f"{table.path} (splits: "
                                                            f"{shown_names(splits)})")
    return splits


def register_task_file(path: str | Path) -> str:
    """Register the task a YAML file defines and return its name. The same file again is a
    no-op; a name another task already has is an error naming both. Call after the built-in
    tasks are registered (qbench.core.registry.include_task_file does)."""
    path = Path(path).expanduser()
    # one file by any path (a symlink, `sub/../x.yaml`) is the same task, not a clash
    existing = {cls.task_file.resolve(): name for name, cls in TASKS.items()
                if isinstance(cls, type) and issubclass(cls, YamlTask)}
    if path.resolve() in existing:
        return existing[path.resolve()]
    cls = task_class(path)
    taken = TASKS.get(cls.name)
    if taken is not None:
        raise RegistryError(f"task file {path}: name: {cls.name!r} is already the name of "
                            f"{_defined_by(taken)}; choose another name")
    register_task(cls)
    return cls.name


def _defined_by(cls: type[Task]) -> str:
    if issubclass(cls, YamlTask):
        return f"the task of {cls.task_file}"
    where = "built-in task" if cls.__module__.startswith("qbench.tasks.") else "task"
    return f"the {where} {cls.__module__}.{cls.__qualname__}"


set_task_file_reader(register_task_file)

__all__ = ["TaskSpec", "YamlTask", "read_annotations", "register_task_file", "task_class"]
