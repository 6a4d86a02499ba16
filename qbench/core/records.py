"""The two records that flow through a run: a Sample (what a task loads) and a Prediction
(what a model answers). Everything else in qbench reads or writes these."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

# The name of a kind of question; what each kind means is declared in qbench/core/kinds.py.
KindName = Literal["score", "degradation", "comparison"]

# Why a sample has no usable answer. "ok" is the only status whose answer counts.
Status = Literal["ok", "unparsed", "image_error", "model_error", "missing"]


@dataclass(frozen=True)
class Sample:
    """One item of a benchmark.

    `images` holds one path for score/degradation samples and (reference, A, B) for comparison
    samples. Ground truth fields are filled according to `kind`:
      score        -> mos (raw, as the dataset publishes it) and mos_norm (rescaled to [1, 5],
                      higher is better, REFERENCE §2)
      degradation  -> distortion_class and severity (canonical protocol words, "null" for none)
      comparison   -> choice ("Image A" | "Image B" | "Similar")
    `group` ties samples that are compared with each other (SRIQA-Bench groups).
    `resize_short_side` is a step of the task's protocol: the images are downscaled so that the
    shorter side is at most that many pixels before a model sees them (SPAQ).
    """

    id: str
    task: str
    kind: KindName
    images: tuple[str, ...]
    mos: float | None = None
    mos_norm: float | None = None
    distortion_class: str | None = None
    severity: str | None = None
    choice: str | None = None
    group: str | None = None
    resize_short_side: int | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Prediction:
    """A model's answer to one sample, as written to predictions.jsonl (one JSON line each)."""

    task: str
    sample_id: str
    status: Status = "ok"
    score: float | None = None
    distortion_class: str | None = None
    severity: str | None = None
    choice: str | None = None
    text: str | None = None  # raw model output (reasoning included), when there is one
    error: str | None = None
    latency_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        # the fields as they are (all JSON types but `extra`, copied one level): asdict's deep
        # copy is the harness's largest per-sample cost
        row = dict(vars(self))
        if row["extra"]:
            row["extra"] = dict(row["extra"])
        else:
            del row["extra"]
        return row

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Prediction:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})

    @classmethod
    def failure(cls, sample: Sample, status: Status, error: str) -> Prediction:
        return cls(task=sample.task, sample_id=sample.id, status=status, error=error)
