"""The task interface: a benchmark declares what it is and how to find and read its files.
Loading is its only job. Scoring follows from its kind through the metric registry
(qbench.scoring.metrics); a task with a protocol of its own registers metrics for itself there."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from typing_extensions import NotRequired, TypedDict

from qbench.core.options import NoOptions, parse_options
from qbench.core.provenance import read_record
from qbench.core.records import KindName, Sample


class DataError(Exception):
    """A dataset problem the user must fix; its message is one line naming file and cause."""


class DataNotFound(DataError):
    """The task's files are not where qbench looked."""


# More rows than this share dropped by a reader is a problem (`data check` exits 1, `run` 3).
DROP_TOLERANCE = 0.01


class SplitFacts(TypedDict):
    """TaskData.describe: what a run folder keeps about a loaded split (the manifest's task
    entry, qbench.results.folder.TaskFacts, adds what the run selected from it)."""

    split: str
    source: str
    split_source: str
    lower_better: bool | None
    mos_range: list[float] | None
    expected_count: int | None
    n: int
    rows_read: int
    rows_dropped: int
    repeated: int
    notes: list[str]
    problems: list[str]
    options: dict[str, Any]
    fetched: NotRequired[list[dict[str, Any]]]


@dataclass
class TaskData:
    """What a task's loader returns: the samples of one split and every fact about them that a
    later reader of the run needs. Tasks are stateless: what `load` learns is here, nowhere else.

    `rows_read` / `rows_dropped` count the rows or records the reader looked at and threw away
    (a missing or out-of-range score, an unusable record, a repeated image); `repeated` counts
    the images listed more than once. `notes` explain every one of them in a line each.
    """

    samples: list[Sample]
    notes: list[str] = field(default_factory=list)
    source: str = ""                  # which files were read (native release, DeQA metas, ...)
    split: str = ""
    split_source: str = ""            # what defined the split: a meta file, a published list, ...
    lower_better: bool | None = None  # direction of Sample.mos as loaded; None: as declared
    mos_range: tuple[float, float] | None = None   # the scale of Sample.mos, where known
    expected_count: int | None = None  # the published size of this split from this source
    rows_read: int = 0
    rows_dropped: int = 0
    repeated: int = 0
    options: dict[str, Any] = field(default_factory=dict)   # the task options in effect
    fetched: list[dict[str, Any]] | None = None   # what `qbench fetch` filled the folder with

    def problems(self) -> list[str]:
        """What makes this split differ from the published one, a line each: a count that is
        not the expected one, more than DROP_TOLERANCE of the rows dropped, images listed
        twice. `data check`, `run` and `train --check` all report these the same way."""
        out = []
        n = len(self.samples)
        if self.expected_count is not None and n != self.expected_count:
            out.append(f"{n} samples in split {self.split!r}, expected {self.expected_count} "
                       f"({self.split_source or self.source})")
        if self.rows_read and self.rows_dropped / self.rows_read > DROP_TOLERANCE:
            out.append(f"dropped {self.rows_dropped} of {self.rows_read} rows "
                       f"({self.rows_dropped / self.rows_read:.1%}, more than "
                       f"{DROP_TOLERANCE:.0%}): see the notes")
        if self.repeated:
            out.append(f"{self.repeated} images listed more than once (one row kept for each; "
                       f"see the notes)")
        return out

    def describe(self) -> SplitFacts:
        """The facts a run folder keeps about the loaded split (everything but the samples)."""
        facts = SplitFacts(
            split=self.split, source=self.source, split_source=self.split_source,
            lower_better=self.lower_better,
            mos_range=list(self.mos_range) if self.mos_range else None,
            expected_count=self.expected_count, n=len(self.samples), rows_read=self.rows_read,
            rows_dropped=self.rows_dropped, repeated=self.repeated, notes=list(self.notes),
            problems=self.problems(), options=dict(self.options))
        if self.fetched is not None:
            facts["fetched"] = self.fetched
        return facts


@dataclass(frozen=True)
class ModelConvention:
    """What the metrics need to know about a model's scores."""

    lower_better: bool = False
    score_range: tuple[float, float] | None = None


class Task(ABC):
    """Base class of every benchmark. Subclasses set the class attributes and `load`."""

    name: ClassVar[str]
    kind: ClassVar[KindName]
    description: ClassVar[str] = ""
    label: ClassVar[str] = ""                 # how papers' tables head its column ("KonIQ")
    lower_better: ClassVar[bool] = False      # ground-truth direction (CSIQ DMOS: True)
    splits: ClassVar[tuple[str, ...]] = ("test",)
    default_split: ClassVar[str] = "test"
    expected_count: ClassVar[dict[str, int]] = {}
    folders: ClassVar[tuple[str, ...]] = ()    # sub-folders of the data root to try, in order
    markers: ClassVar[tuple[str, ...]] = ()    # relative paths or globs; any one marks the data
    in_all: ClassVar[bool] = True              # part of `--tasks all` (the demos are not)
    Options: ClassVar[type] = NoOptions        # a dataclass of the task's `--task-arg`s
    options: Any                               # an instance of it
    # Sample.meta keys its own metrics read: stored with each prediction so that a run folder
    # alone can be scored again (merge, compare, report)
    truth_meta: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = parse_options(self.Options, options or {}, self.name, flag="--task-arg",
                                     error=DataError)

    def option_values(self) -> dict[str, Any]:
        return asdict(self.options)

    def split_help(self, split: str) -> str:
        """Where `split` comes from (shown by `qbench list`); tasks with several sources say
        more."""
        count = self.expected_count.get(split)
        return f"expected {count:,}" if count is not None else ""

    @property
    def prompt_kind(self) -> KindName:
        """The question a model must answer for this task's samples."""
        return self.kind

    # -------------------------------------------------------------------------- finding data
    def candidates(self, data_root: Path | None) -> list[Path]:
        if data_root is None:
            return []
        return [data_root / f for f in (self.folders or (self.name,))]

    def locate(self, data_root: Path | None, override: Path | None = None) -> Path:
        """The folder holding this task's files, or DataNotFound naming what was looked for."""
        places = [override] if override is not None else self.candidates(data_root)
        for place in places:
            if any(_present(place, marker) for marker in self.markers or ("",)):
                return place
        looked = (", ".join(str(p) for p in places)
                  or "(no data root: pass --data-root or set QBENCH_DATA_ROOT)")
        wanted = " or ".join(self.markers) or "its folder"
        raise DataNotFound(f"{self.name}: {wanted} not found in {looked}")

    @abstractmethod
    def load(self, folder: Path, split: str) -> TaskData:
        """The samples of `split` from the task's folder; DataError when the files are unusable."""

    def load_split(self, folder: Path, split: str) -> TaskData:
        """`load`, with the facts a plugin's loader may leave out taken from the declaration
        (the split, its expected count, the ground-truth direction, the options) and what
        `qbench fetch` recorded filling the folder."""
        data = self.load(folder, split)
        data.split = data.split or split
        if data.lower_better is None:
            data.lower_better = self.lower_better
        if data.expected_count is None:
            data.expected_count = self.expected_count.get(split)
        if not data.split_source:
            data.split_source = data.source
        data.options = data.options or self.option_values()
        data.fetched = read_record(folder)
        return data

def _present(folder: Path, marker: str) -> bool:
    if any(c in marker for c in "*?["):
        return folder.is_dir() and next(folder.glob(marker), None) is not None
    return (folder / marker).exists()


def default_data_root() -> Path | None:
    from qbench.core.settings import user_settings
    return user_settings().data_root
