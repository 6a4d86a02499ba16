"""Bootstrap uncertainty: percentile confidence intervals of a statistic, and a paired bootstrap
of the difference between two runs on the same units (qbench.scoring.metrics says which statistic
each metric uses).

Vectorised: a resample is a row of counts (how often each sample was drawn), so a statistic over
B resamples is a few (B, n) array operations, never a Python loop over resamples. SRCC on a
resample uses average ranks derived from the counts: exactly what Spearman's rho of the resampled
data is, ties included. Both runs of a paired comparison see the same resamples.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from qbench.scoring.formulas import Values

# counts (B, n) -> one value per resample (B,); NaN where a resample leaves it undefined
Statistic = Callable[[np.ndarray], np.ndarray]

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
_CHUNK_CELLS = 2_000_000  # cells of one counts block: bounds memory for large test sets


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Blocks of bootstrap resamples of n items, as draw counts (rows sum to n)."""
    per_block = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, resamples, per_block):
        rows = min(per_block, resamples - start)
        draws = rng.integers(0, n, size=(rows, n)) + n * np.arange(rows)[:, None]
        yield np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n)


def _weighted_sums(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Row sums of weights × values, values (n,) or (B, n); one BLAS or einsum pass."""
    return weights @ values if values.ndim == 1 else np.einsum("ij,ij->i", weights, values)


def weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson's r of each row's weighted data; x, y are (n,) or (B, n), weights (B, n).
    Callers pass values centred near zero (raw moments then lose no precision)."""
    weights = weights.astype(float, copy=False)
    total = weights.sum(axis=1)
    mean_x, mean_y = _weighted_sums(weights, x) / total, _weighted_sums(weights, y) / total
    square_x = _weighted_sums(weights, x * x) / total
    square_y = _weighted_sums(weights, y * y) / total
    var_x, var_y = square_x - mean_x ** 2, square_y - mean_y ** 2
    cov = _weighted_sums(weights, x * y) / total - mean_x * mean_y
    # a resample of one repeated value has a variance of rounding noise, not zero
    spread = (var_x > 1e-12 * square_x) & (var_y > 1e-12 * square_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread, cov / np.sqrt(var_x * var_y), np.nan)


def _rank_counts(values: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function giving, per resample, each item's average rank among the drawn items, minus
    the mean rank (centred, for weighted_pearson)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new_value = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(new_value)                 # first sorted position of each tie group
    group_of = np.empty(len(values), dtype=int)
    group_of[order] = np.cumsum(new_value) - 1

    def ranks(counts: np.ndarray) -> np.ndarray:
        per_group = np.add.reduceat(counts[:, order], starts, axis=1)   # draws per tie group
        below = np.cumsum(per_group, axis=1) - per_group
        drawn = per_group.sum(axis=1, keepdims=True)
        return (below + (per_group - drawn) / 2.0)[:, group_of]   # rank − (drawn + 1) / 2
    return ranks


def _centred(values: Values) -> np.ndarray:
    array = np.asarray(values, float)
    return array - array.mean() if len(array) else array


def pearson_statistic(pred: Values, gt: Values) -> Statistic:
    x, y = _centred(pred), _centred(gt)
    return lambda counts: weighted_pearson(x, y, counts)


def spearman_statistic(pred: Values, gt: Values) -> Statistic:
    rank_x, rank_y = _rank_counts(np.asarray(pred, float)), _rank_counts(np.asarray(gt, float))
    return lambda counts: weighted_pearson(rank_x(counts), rank_y(counts), counts)


def accuracy_statistic(correct: Sequence[bool], groups: Sequence[str | None] | None = None
                       ) -> Statistic:
    """Accuracy of the drawn items; with `groups`, the mean of per-group accuracies (the macro
    mean of Q-Insight Table 2) over the groups a resample contains. Items whose group is None
    do not count."""
    hits = np.asarray(correct, dtype=float)
    labels = [None] * len(hits) if groups is None else list(groups)
    names = sorted({g for g in labels if g is not None}) if groups is not None else [None]
    member = np.array([[g == name for name in names] for g in labels], dtype=float).reshape(
        len(hits), len(names))

    def statistic(counts: np.ndarray) -> np.ndarray:
        drawn = counts @ member
        with np.errstate(invalid="ignore", divide="ignore"):
            per_group = (counts * hits) @ member / drawn
        per_group[drawn == 0] = np.nan
        defined = ~np.isnan(per_group)
        sums = np.where(defined, per_group, 0.0).sum(axis=1)
        return np.where(defined.any(axis=1), sums / np.maximum(defined.sum(axis=1), 1), np.nan)
    return statistic


def ratio_statistic(right: Sequence[float], total: Sequence[float]) -> Statistic:
    """sum(right) / sum(total) over the drawn units (an accuracy pooled over groups)."""
    hits, sizes = np.asarray(right, float), np.asarray(total, float)

    def statistic(counts: np.ndarray) -> np.ndarray:
        drawn = counts @ sizes
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(drawn > 0, (counts @ hits) / drawn, np.nan)
    return statistic


def looped(fn: Callable[..., float], *arrays: np.ndarray) -> Statistic:
    """A statistic for metrics with no closed form over counts (Kendall's tau, a logistic fit):
    `fn` on each resample's data, one resample at a time."""
    columns = [np.asarray(a) for a in arrays]

    def statistic(counts: np.ndarray) -> np.ndarray:
        out = np.empty(len(counts))
        for row, drawn in enumerate(counts):
            index = np.repeat(np.arange(len(drawn)), drawn.astype(int))
            out[row] = fn(*(c[index] for c in columns))
        return out
    return statistic


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap confidence interval. `undefined`: resamples where the statistic
    had no value (e.g. a constant resample); they are left out of the percentiles."""

    estimate: float
    low: float
    high: float
    level: float
    resamples: int
    undefined: int = 0

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class PairedDifference:
    """Statistic of run A minus run B on the same samples, with its bootstrap interval. The
    p-value is two-sided (twice the smaller tail of the resampled differences beyond zero),
    floored at 1/resamples."""

    a: float
    b: float
    difference: float
    low: float
    high: float
    p_value: float
    level: float
    resamples: int
    n: int

    def verdict(self, higher_better: bool = True) -> str:
        """Which run is better by this metric, read the metric's own way round."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return "undefined"
        if self.low > 0:
            return "A better" if higher_better else "B better"
        if self.high < 0:
            return "B better" if higher_better else "A better"
        return "no significant difference"


def _resampled(statistics: Sequence[Statistic], n: int, resamples: int, seed: int
               ) -> list[np.ndarray]:
    """Every statistic on the same `resamples` bootstrap resamples (same seed, same draws)."""
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    rng = np.random.default_rng(seed)
    blocks: list[list[np.ndarray]] = [[] for _ in statistics]
    for counts in resample_counts(n, resamples, rng):
        for out, statistic in zip(blocks, statistics, strict=True):
            out.append(statistic(counts))
    return [np.concatenate(b) for b in blocks]


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be between 0 and 1, got {level}")


def _estimate(statistic: Statistic, n: int) -> float:
    return float(statistic(np.ones((1, n)))[0])


def bootstrap_interval(statistic: Statistic, n: int, *, resamples: int = DEFAULT_RESAMPLES,
                       level: float = DEFAULT_LEVEL, seed: int = 0) -> Interval:
    _check_level(level)
    estimate = _estimate(statistic, n) if n else math.nan
    if not math.isfinite(estimate):
        return Interval(math.nan, math.nan, math.nan, level, resamples, resamples)
    values = _resampled([statistic], n, resamples, seed)[0]
    defined = values[np.isfinite(values)]
    if not len(defined):
        return Interval(estimate, math.nan, math.nan, level, resamples, resamples)
    low, high = np.percentile(defined, [50 * (1 - level), 50 * (1 + level)])
    return Interval(estimate, float(low), float(high), level, resamples,
                    resamples - len(defined))


def paired_bootstrap(statistic_a: Statistic, statistic_b: Statistic, n: int, *,
                     resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                     seed: int = 0) -> PairedDifference:
    """A minus B, both computed on the same n samples (same order) and the same resamples."""
    _check_level(level)
    a = _estimate(statistic_a, n) if n else math.nan
    b = _estimate(statistic_b, n) if n else math.nan
    low = high = p_value = math.nan
    if math.isfinite(a) and math.isfinite(b):
        values_a, values_b = _resampled([statistic_a, statistic_b], n, resamples, seed)
        diff = values_a - values_b
        diff = diff[np.isfinite(diff)]
        if len(diff):
            low, high = (float(v)
                         for v in np.percentile(diff, [50 * (1 - level), 50 * (1 + level)]))
            tail = min(np.mean(diff <= 0), np.mean(diff >= 0))
            p_value = float(min(1.0, max(2 * tail, 1 / resamples)))
    return PairedDifference(a, b, a - b, low, high, p_value, level, resamples, n)
