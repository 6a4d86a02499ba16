"""Metrics declared once. A metric names the task kinds it applies to, whether higher is better,
whether it is a headline figure, how it is computed and how it is bootstrapped. Evaluation,
confidence intervals, leaderboard columns, compare and report all iterate over this registry;
none of them switches on a task's kind. A task with a protocol of its own (SRIQA-Bench) registers
its metrics in its own module with `tasks=(...)`.

Adding a metric with an interval is one `@metric(...)` in one place, e.g.:

    @metric("mae", kinds={"score"}, higher_better=False,
            resample=lambda s: per_sample(s, looped(mean_abs, s.pred, s.gt)))
    def mae(s: Scored) -> float | None:
        return mean_abs(s.pred, s.gt) if s.scored else None

(tests/e2e/test_rundir.py adds this one and checks it in metrics.json, the leaderboard, compare and
the report.)
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from qbench.core.kinds import Kind, kind_of
from qbench.core.protocol import DISTORTIONS
from qbench.core.records import Prediction, Sample
from qbench.scoring import formulas as m
from qbench.scoring.bootstrap import (
    Interval,
    Statistic,
    accuracy_statistic,
    bootstrap_interval,
    looped,
    paired_bootstrap,
    pearson_statistic,
    ratio_statistic,
    spearman_statistic,
)

MIN_SCORED = 3   # correlations of fewer points are not reported


@dataclass(frozen=True)
class Conventions:
    """What orients a run's numbers: the model's score direction and scale, and the direction of
    the loaded ground truth (TaskData.lower_better, stored in the run manifest)."""

    model_lower_better: bool = False
    score_range: tuple[float, float] | None = None
    truth_lower_better: bool = False


@dataclass
class Scored:
    """One task's samples with their predictions and conventions: everything a metric reads.
    Derived arrays are computed once, on first use."""

    task: str
    kind: Kind
    samples: list[Sample]
    predictions: dict[str, Prediction]
    conventions: Conventions = field(default_factory=Conventions)

    @classmethod
    def of(cls, task: str, kind: str, samples: Sequence[Sample],
           predictions: dict[str, Prediction], conventions: Conventions) -> Scored:
        """Samples in id order: metrics do not depend on the order, bootstrap draws do, and a
        run must give the same intervals however its predictions were written (shards)."""
        return cls(task, kind_of(kind), sorted(samples, key=lambda s: s.id), predictions,
                   conventions)

    def restricted(self, ids: Iterable[str]) -> Scored:
        """The same task on a subset of its samples (in the order given)."""
        by_id = {s.id: s for s in self.samples}
        return replace(self, samples=[by_id[i] for i in ids])

    def answer(self, sample: Sample) -> Prediction | None:
        """The sample's answer when it counts (status ok), else None."""
        prediction = self.predictions.get(sample.id)
        return prediction if prediction is not None and prediction.ok else None

    @cached_property
    def scored(self) -> list[Sample]:
        """Samples with a usable score and a ground-truth score."""
        return [s for s in self.samples
                if (p := self.answer(s)) is not None and p.score is not None and s.mos is not None]

    @property
    def scored_ids(self) -> list[str]:
        return [s.id for s in self.scored]

    @cached_property
    def pred(self) -> np.ndarray:
        """Scores of the scored samples, oriented higher-is-better."""
        return m.orient([score for s in self.scored
                         if (score := self.predictions[s.id].score) is not None],
                        self.conventions.model_lower_better)

    @cached_property
    def gt(self) -> np.ndarray:
        return m.orient([mos for s in self.scored if (mos := s.mos) is not None],
                        self.conventions.truth_lower_better)

    @cached_property
    def gt_norm(self) -> np.ndarray | None:
        norms = [s.mos_norm for s in self.scored]
        return None if any(n is None for n in norms) else np.asarray(norms, float)

    @property
    def correlatable(self) -> bool:
        return len(self.scored) >= MIN_SCORED

    def right(self) -> list[bool]:
        return [self.kind.right(s, self.answer(s)) for s in self.samples]


@dataclass(frozen=True)
class Resampling:
    """How a metric is bootstrapped: the units drawn (sample ids, or groups) and the statistic
    that maps draw counts (B, len(units)) to B values."""

    units: list[str]
    statistic: Statistic


@dataclass(frozen=True)
class Metric:
    name: str
    kinds: frozenset[str]
    value: Callable[[Scored], Any]
    higher_better: bool = True
    headline: bool = True     # a column of the tables, compared, given an interval
    resample: Callable[[Scored], Resampling | None] | None = None
    tasks: frozenset[str] | None = None   # only these tasks (their own protocol)

    def applies(self, task: str, kind: str) -> bool:
        return kind in self.kinds and (self.tasks is None or task in self.tasks)


# One name may be registered for different kinds or tasks (SRIQA's `acc` for its score task and
# for its comparison task); (name, kinds, tasks) is unique.
METRICS: list[Metric] = []


def metric(name: str, *, kinds: Iterable[str], higher_better: bool = True, headline: bool = True,
           resample: Callable[[Scored], Resampling | None] | None = None,
           tasks: Iterable[str] | None = None) -> Callable[[Callable[[Scored], Any]], Callable]:
    """Decorator registering `fn(scored) -> value` as a metric (see the module docstring)."""
    def decorate(fn: Callable[[Scored], Any]) -> Callable[[Scored], Any]:
        new = Metric(name, frozenset(kinds), fn, higher_better, headline, resample,
                     frozenset(tasks) if tasks is not None else None)
        METRICS[:] = [x for x in METRICS
                      if (x.name, x.kinds, x.tasks) != (new.name, new.kinds, new.tasks)] + [new]
        return fn
    return decorate


def metrics_for(task: str, kind: str, *, headline_only: bool = False) -> list[Metric]:
    return [x for x in METRICS if x.applies(task, kind) and (x.headline or not headline_only)]


def headline_names() -> list[str]:
    """Every headline metric name, in registration order (table columns)."""
    return list(dict.fromkeys(x.name for x in METRICS if x.headline))


def higher_better(name: str) -> bool:
    return next((x.higher_better for x in METRICS if x.name == name), True)


# ------------------------------------------------------------------------------ evaluating

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


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def evaluate(scored: Scored) -> dict[str, Any]:
    """Coverage and every metric that applies to the task."""
    out = coverage(scored.samples, scored.predictions)
    for x in metrics_for(scored.task, scored.kind.name):
        out[x.name] = _clean(x.value(scored))
    return out


def intervals(scored: Scored, *, resamples: int, level: float = 0.95, seed: int = 0
              ) -> dict[str, Interval]:
    """Bootstrap intervals of every headline metric that can be resampled."""
    out = {}
    for x in metrics_for(scored.task, scored.kind.name, headline_only=True):
        plan = x.resample(scored) if x.resample else None
        if plan is not None:
            out[x.name] = bootstrap_interval(plan.statistic, len(plan.units), resamples=resamples,
                                             level=level, seed=seed)
    return out


@dataclass(frozen=True)
class Difference:
    metric: str
    higher_better: bool
    result: Any   # uncertainty.PairedDifference

    @property
    def verdict(self) -> str:
        return self.result.verdict(self.higher_better)


def paired_differences(a: Scored, b: Scored, *, resamples: int, level: float = 0.95,
                       seed: int = 0) -> list[Difference]:
    """A minus B for every headline metric, both on the same units and the same resamples."""
    out = []
    for x in metrics_for(a.task, a.kind.name, headline_only=True):
        plan_a = x.resample(a) if x.resample else None
        plan_b = x.resample(b) if x.resample else None
        if plan_a is None or plan_b is None:
            continue
        if plan_a.units != plan_b.units:
            raise ValueError(f"{a.task} {x.name}: the runs resample different units")
        out.append(Difference(x.name, x.higher_better, paired_bootstrap(
            plan_a.statistic, plan_b.statistic, len(plan_a.units), resamples=resamples,
            level=level, seed=seed)))
    return out


# ------------------------------------------------------------------------------ score metrics

def per_sample(scored: Scored, statistic: Statistic) -> Resampling:
    return Resampling(scored.scored_ids, statistic)


def _correlation(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[Scored], float | None]:
    return lambda s: fn(s.pred, s.gt) if s.correlatable else None


def _scored_plan(build: Callable[[Scored], Statistic]) -> Callable[[Scored], Resampling | None]:
    return lambda s: per_sample(s, build(s)) if s.correlatable else None


def _logistic_plan(s: Scored) -> Statistic:
    start = m.fit_logistic(s.pred, s.gt)   # each resample's fit starts from the whole set's
    return looped(lambda x, y: m.plcc_logistic(x, y, start), s.pred, s.gt)


metric("plcc", kinds={"score"}, resample=_scored_plan(lambda s: pearson_statistic(s.pred, s.gt)))(
    _correlation(m.plcc))
metric("plcc_logistic", kinds={"score"}, resample=_scored_plan(_logistic_plan))(
    _correlation(m.plcc_logistic))
metric("srcc", kinds={"score"}, resample=_scored_plan(lambda s: spearman_statistic(s.pred, s.gt)))(
    _correlation(m.srcc))
metric("krcc", kinds={"score"}, resample=_scored_plan(lambda s: looped(m.krcc, s.pred, s.gt)))(
    _correlation(m.krcc))



@metric("rmse", kinds={"score"}, higher_better=False, headline=False)
def _rmse(s: Scored) -> float | None:
    """Raw RMSE on [1, 5], only for a model that answers on that scale."""
    on_scale = s.conventions.score_range == (1.0, 5.0) and not s.conventions.model_lower_better
    return m.rmse(s.pred, s.gt_norm) if on_scale and s.gt_norm is not None and s.scored else None


@metric("rmse_logistic", kinds={"score"}, higher_better=False, headline=False)
def _rmse_logistic(s: Scored) -> float | None:
    """RMSE after mapping the scores onto [1, 5] with the logistic."""
    if s.gt_norm is None or not s.correlatable:
        return None
    params = m.fit_logistic(s.pred, s.gt_norm)
    return m.rmse(m.logistic4(s.pred, *params), s.gt_norm) if params is not None else None


@metric("n_scored", kinds={"score"}, headline=False)
def _n_scored(s: Scored) -> int:
    return len(s.scored)


# ------------------------------------------------------------------------------ degradation

def _class_right(s: Scored) -> list[bool]:
    return [(p := s.answer(x)) is not None and p.distortion_class == x.distortion_class
            for x in s.samples]


def _level_right(s: Scored) -> list[bool]:
    return [ok and s.predictions[x.id].severity == x.severity
            for x, ok in zip(s.samples, _class_right(s), strict=True)]


def _per_class(s: Scored, right: list[bool], classes: Sequence[str]) -> dict[str, float]:
    """Q-Insight Table 2: accuracy within each true class (no answer counts as wrong)."""
    out = {}
    for name in classes:
        rows = [i for i, x in enumerate(s.samples) if x.distortion_class == name]
        if rows:
            out[name] = sum(right[i] for i in rows) / len(rows)
    return out


def _mean(values: dict[str, float]) -> float | None:
    return float(np.mean(list(values.values()))) if values else None


def _class_groups(s: Scored, classes: Sequence[str]) -> list[str | None]:
    return [x.distortion_class if x.distortion_class in classes else None for x in s.samples]


def _all_ids(s: Scored) -> list[str]:
    return [x.id for x in s.samples]


metric("class_acc", kinds={"degradation"}, headline=False)(
    lambda s: _per_class(s, _class_right(s), s.kind.labels))
metric("level_acc", kinds={"degradation"}, headline=False)(
    lambda s: _per_class(s, _level_right(s), DISTORTIONS))
metric("class_acc_mean", kinds={"degradation"},
       resample=lambda s: Resampling(_all_ids(s), accuracy_statistic(
           _class_right(s), _class_groups(s, s.kind.labels))))(
    lambda s: _mean(_per_class(s, _class_right(s), s.kind.labels)))
metric("level_acc_mean", kinds={"degradation"},
       resample=lambda s: Resampling(_all_ids(s), accuracy_statistic(
           _level_right(s), _class_groups(s, DISTORTIONS))))(
    lambda s: _mean(_per_class(s, _level_right(s), DISTORTIONS)))


@metric("confusion", kinds={"degradation", "comparison"}, headline=False)
def _confusion(s: Scored) -> dict[str, Any]:
    """Rows: true label; columns: answered label (failures in no column)."""
    truth = [s.kind.truth_label(x) for x in s.samples]
    said = [s.kind.answer_label(p) if (p := s.answer(x)) else "" for x in s.samples]
    return {"labels": list(s.kind.labels), "matrix": m.confusion(truth, said, s.kind.labels)}


# ------------------------------------------------------------------------------ comparison

@metric("accuracy", kinds={"comparison"},
        resample=lambda s: Resampling(_all_ids(s), accuracy_statistic(s.right())))
def _accuracy(s: Scored) -> float | None:
    """Share of asked samples answered right (a failure is wrong)."""
    return sum(s.right()) / len(s.samples) if s.samples else None


def group_accuracy(units: list[str], right: Sequence[float], total: Sequence[float]) -> Resampling:
    """Resampling of an accuracy pooled over groups (SRIQA-Bench pairs within a group): the
    groups are drawn, and each contributes its right and total counts."""
    return Resampling(units, ratio_statistic(right, total))


__all__ = ["Conventions", "Difference", "METRICS", "Metric", "Resampling", "Scored", "coverage",
           "evaluate", "group_accuracy", "headline_names", "higher_better", "intervals", "metric",
           "metrics_for", "paired_differences", "per_sample"]
