"""The task interface: a benchmark declares what it is and how to find and read its files.
Loading is its only job; scoring follows from its kind (overridable for special protocols)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from . import metrics
from .records import Kind, Prediction, Sample


class DataError(Exception):
    """A dataset problem the user must fix; its message is one line naming file and cause."""


class DataNotFound(DataError):
    """The task's files are not where qbench looked."""


@dataclass
class TaskData:
    """What a task's loader returns: the samples, and notes on rows it had to drop."""

    samples: list[Sample]
    notes: list[str] = field(default_factory=list)
    source: str = ""  # which files were read (native release, DeQA metas, ...)


@dataclass(frozen=True)
class ModelConvention:
    """What the metrics need to know about a model's scores."""

    lower_better: bool = False
    score_range: tuple[float, float] | None = None


class Task(ABC):
    """Base class of every benchmark. Subclasses set the class attributes and `load`."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    description: ClassVar[str] = ""
    lower_better: ClassVar[bool] = False      # ground-truth direction (CSIQ DMOS: True)
    splits: ClassVar[tuple[str, ...]] = ("test",)
    default_split: ClassVar[str] = "test"
    expected_count: ClassVar[dict[str, int]] = {}
    folders: ClassVar[tuple[str, ...]] = ()    # sub-folders of the data root to try, in order
    markers: ClassVar[tuple[str, ...]] = ()    # relative paths or globs; any one marks the data
    in_all: ClassVar[bool] = True              # part of `--tasks all` (the demos are not)

    @property
    def prompt_kind(self) -> Kind:
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
        looked = ", ".join(str(p) for p in places) or "(no data root: pass --data-root or set QBENCH_DATA_ROOT)"
        wanted = " or ".join(self.markers) or "its folder"
        raise DataNotFound(f"{self.name}: {wanted} not found in {looked}")

    @abstractmethod
    def load(self, folder: Path, split: str) -> TaskData:
        """The samples of `split` from the task's folder; DataError when the files are unusable."""

    # -------------------------------------------------------------------------- scoring
    def evaluate(self, samples: Sequence[Sample], predictions: dict[str, Prediction],
                 model: ModelConvention) -> dict[str, Any]:
        """Metrics for one run of this task. `predictions` maps sample id to prediction;
        samples without one count as missing."""
        summary = coverage(samples, predictions)
        ok = [s for s in samples if s.id in predictions and predictions[s.id].ok]
        if self.kind == "score":
            scored = [s for s in ok if predictions[s.id].score is not None]
            summary["n_scored"] = len(scored)
            if len(scored) >= 3:
                pred = metrics.orient([predictions[s.id].score for s in scored], model.lower_better)
                gt = metrics.orient([s.mos for s in scored], self.lower_better)
                summary.update(metrics.score_metrics(
                    pred, gt, [s.mos_norm for s in scored],
                    pred_on_norm_scale=model.score_range == (1.0, 5.0) and not model.lower_better))
        elif self.kind == "degradation":
            found = [predictions.get(s.id) for s in samples]
            summary.update(metrics.degradation_metrics(
                [s.distortion_class for s in samples], [s.severity for s in samples],
                [p.distortion_class if p and p.ok else None for p in found],
                [p.severity if p and p.ok else None for p in found]))
        elif self.kind == "comparison":
            right = sum(predictions[s.id].choice == s.choice for s in ok)
            summary["accuracy"] = right / len(samples) if samples else None
        return summary


def _present(folder: Path, marker: str) -> bool:
    if any(c in marker for c in "*?["):
        return folder.is_dir() and next(folder.glob(marker), None) is not None
    return (folder / marker).exists()


def coverage(samples: Sequence[Sample], predictions: dict[str, Prediction]) -> dict[str, Any]:
    """n, parsed fraction and the failed sample ids grouped by status."""
    failures: dict[str, list[str]] = {}
    for s in samples:
        p = predictions.get(s.id)
        status = "missing" if p is None else p.status
        if status != "ok":
            failures.setdefault(status, []).append(s.id)
    n = len(samples)
    n_ok = n - sum(len(v) for v in failures.values())
    return {"n": n, "n_ok": n_ok, "parsed_fraction": n_ok / n if n else 0.0,
            "failure_counts": dict(Counter({k: len(v) for k, v in failures.items()})),
            "failures": failures}


def default_data_root() -> Path | None:
    from .settings import user_settings
    return user_settings().data_root
