"""Metrics: small pure functions over numpy arrays (REFERENCE §4 conventions).

Correlations expect "higher is better" on both sides; callers flip lower-is-better ground truth
or predictions with `orient` before correlating.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats

# What the helpers take: a list of numbers or an array (each reads it with np.asarray).
Values = Sequence[float] | npt.NDArray[np.floating]


def orient(values: Values, lower_better: bool) -> np.ndarray:
    """Values as "higher is better"."""
    array = np.asarray(values, dtype=float)
    return -array if lower_better else array


def _defined(x: np.ndarray, y: np.ndarray) -> bool:
    return len(x) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0


def plcc(pred: Values, gt: Values) -> float:
    x, y = np.asarray(pred, float), np.asarray(gt, float)
    return float(stats.pearsonr(x, y)[0]) if _defined(x, y) else math.nan


def srcc(pred: Values, gt: Values) -> float:
    x, y = np.asarray(pred, float), np.asarray(gt, float)
    return float(stats.spearmanr(x, y)[0]) if _defined(x, y) else math.nan


def krcc(pred: Values, gt: Values) -> float:
    """Kendall tau-b."""
    x, y = np.asarray(pred, float), np.asarray(gt, float)
    return float(stats.kendalltau(x, y, variant="b")[0]) if _defined(x, y) else math.nan


def rmse(pred: Values, gt: Values) -> float:
    x, y = np.asarray(pred, float), np.asarray(gt, float)
    return float(np.sqrt(np.mean((x - y) ** 2))) if len(x) else math.nan


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """DeQA-Score's 4-parameter logistic: (b1 − b2) / (1 + exp(−(x − b3)/|b4|)) + b2."""
    z = np.clip(-(x - b3) / (abs(b4) + 1e-12), -500, 500)
    return (b1 - b2) / (1 + np.exp(z)) + b2


def fit_logistic(pred: Values, gt: Values,
                 start: np.ndarray | None = None) -> np.ndarray | None:
    """Parameters of logistic4 mapping predictions onto ground truth, or None if the fit fails.
    Initial guess as DeQA-Score: [max y, min y, mean x, std x / 4], unless `start` is given."""
    x, y = np.asarray(pred, float), np.asarray(gt, float)
    if not _defined(x, y) or len(x) < 4:  # four parameters need four points (curve_fit raises)
        return None
    init = start if start is not None else [y.max(), y.min(), x.mean(), x.std() / 4 or 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, x, y, p0=init, maxfev=20000)
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return None
    return params if np.all(np.isfinite(params)) else None


def plcc_logistic(pred: Values, gt: Values,
                  start: np.ndarray | None = None) -> float:
    """PLCC after the 4-parameter logistic fit (DeQA-Score convention); NaN when the fit fails.
    `start` replaces DeQA-Score's initial guess (bootstrap resamples start from the full fit)."""
    params = fit_logistic(pred, gt, start)
    return plcc(logistic4(np.asarray(pred, float), *params), gt) if params is not None else math.nan


def confusion(true: Sequence[str | None], pred: Sequence[str | None], labels: Sequence[str]
              ) -> list[list[int]]:
    """Rows: true label, columns: predicted label, in `labels` order (other labels and None
    ignored)."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(true, pred, strict=True):
        if t in index and p in index:
            matrix[index[t], index[p]] += 1
    return matrix.tolist()


def pair_order(a: float, b: float) -> float:
    """1 if a is better than b, 0 if worse, 0.5 if equal."""
    return 1.0 if a > b else 0.0 if a < b else 0.5


def pairwise_accuracy(gt: Values, pred: Values) -> tuple[int, int]:
    """SRIQA-Bench protocol inside one group: over all C(n, 2) pairs, a pair is right when the
    predicted order equals the ground-truth order (a predicted tie is right only on a gt tie).
    Returns (right, pairs)."""
    g, p = np.asarray(gt, float), np.asarray(pred, float)
    i, j = np.triu_indices(len(g), k=1)
    right = np.sign(g[i] - g[j]) == np.sign(p[i] - p[j])
    return int(right.sum()), len(i)
