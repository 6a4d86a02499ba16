"""Metrics: small pure functions over numpy arrays (REFERENCE §4 conventions).

Correlations expect "higher is better" on both sides; callers flip lower-is-better ground truth
or predictions with `orient` before correlating.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

from .protocol import CLASSES, DISTORTIONS


def orient(values: Sequence[float], lower_better: bool) -> np.ndarray:
    """Values as "higher is better"."""
    array = np.asarray(values, dtype=float)
    return -array if lower_better else array


def _defined(x: np.ndarray, y: np.ndarray) -> bool:
    return len(x) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0


def plcc(pred: Sequence[float], gt: Sequence[float]) -> float:
    x, y = np.asarray(pred, float), np.asarray(gt, float)
    return float(stats.pearsonr(x, y)[0]) if _defined(x, y) else math.nan


def srcc(pred: Sequence[float], gt: Sequence[float]) -> float:
    x, y = np.asarray(pred, float), np.asarray(gt, float)
    return float(stats.spearmanr(x, y)[0]) if _defined(x, y) else math.nan


def krcc(pred: Sequence[float], gt: Sequence[float]) -> float:
    """Kendall tau-b."""
    x, y = np.asarray(pred, float), np.asarray(gt, float)
    return float(stats.kendalltau(x, y, variant="b")[0]) if _defined(x, y) else math.nan


def rmse(pred: Sequence[float], gt: Sequence[float]) -> float:
    x, y = np.asarray(pred, float), np.asarray(gt, float)
    return float(np.sqrt(np.mean((x - y) ** 2))) if len(x) else math.nan


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """DeQA-Score's 4-parameter logistic: (b1 − b2) / (1 + exp(−(x − b3)/|b4|)) + b2."""
    z = np.clip(-(x - b3) / (abs(b4) + 1e-12), -500, 500)
    return (b1 - b2) / (1 + np.exp(z)) + b2


def fit_logistic(pred: Sequence[float], gt: Sequence[float]) -> np.ndarray | None:
    """Parameters of logistic4 mapping predictions onto ground truth, or None if the fit fails.
    Initial guess as DeQA-Score: [max y, min y, mean x, std x / 4]."""
    x, y = np.asarray(pred, float), np.asarray(gt, float)
    if not _defined(x, y) or len(x) < 4:  # four parameters need four points (curve_fit raises)
        return None
    init = [y.max(), y.min(), x.mean(), x.std() / 4 or 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, x, y, p0=init, maxfev=20000)
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return None
    return params if np.all(np.isfinite(params)) else None


def score_metrics(pred: Sequence[float], gt: Sequence[float],
                  gt_norm: Sequence[float] | None = None, *, pred_on_norm_scale: bool = False
                  ) -> dict[str, float | None]:
    """The score-task suite. `pred` and `gt` must already be oriented higher-is-better.

    plcc        raw Pearson (pyiqa, Q-Align convention)
    plcc_logistic  Pearson after the 4-parameter logistic fit (DeQA-Score convention)
    rmse_logistic  RMSE of the fitted predictions against gt_norm ([1, 5] scale)
    rmse        raw RMSE against gt_norm, only when the model answers on that [1, 5] scale
    """
    x, y = np.asarray(pred, float), np.asarray(gt, float)
    out: dict[str, float | None] = {"plcc": plcc(x, y), "srcc": srcc(x, y), "krcc": krcc(x, y)}
    params = fit_logistic(x, y)
    out["plcc_logistic"] = plcc(logistic4(x, *params), y) if params is not None else None
    if gt_norm is not None:
        z = np.asarray(gt_norm, float)
        norm_params = fit_logistic(x, z)
        out["rmse_logistic"] = rmse(logistic4(x, *norm_params), z) if norm_params is not None else None
        out["rmse"] = rmse(x, z) if pred_on_norm_scale else None
    return {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
            for k, v in out.items()}


def confusion(true: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Rows: true label, columns: predicted label, in `labels` order (other labels ignored)."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(true, pred):
        if t in index and p in index:
            matrix[index[t], index[p]] += 1
    return matrix.tolist()


def degradation_metrics(true_cls: Sequence[str], true_lev: Sequence[str],
                        pred_cls: Sequence[str | None], pred_lev: Sequence[str | None]) -> dict:
    """Q-Insight Table 2: per-class accuracy of the class (all five classes, mean over them) and
    of the level (class AND level right; the four distortions, mean over them). A sample with no
    parsed answer counts as wrong: it is in the denominator."""
    out: dict = {"class_acc": {}, "level_acc": {}}
    for name in CLASSES:
        rows = [i for i, c in enumerate(true_cls) if c == name]
        if not rows:
            continue
        out["class_acc"][name] = sum(pred_cls[i] == name for i in rows) / len(rows)
        if name in DISTORTIONS:
            out["level_acc"][name] = sum(pred_cls[i] == name and pred_lev[i] == true_lev[i]
                                         for i in rows) / len(rows)
    out["class_acc_mean"] = float(np.mean(list(out["class_acc"].values()))) if out["class_acc"] else None
    out["level_acc_mean"] = float(np.mean(list(out["level_acc"].values()))) if out["level_acc"] else None
    out["confusion"] = {"labels": list(CLASSES),
                        "matrix": confusion(true_cls, [p or "" for p in pred_cls], CLASSES)}
    return out


def pair_order(a: float, b: float) -> float:
    """1 if a is better than b, 0 if worse, 0.5 if equal."""
    return 1.0 if a > b else 0.0 if a < b else 0.5


def pairwise_accuracy(gt: Sequence[float], pred: Sequence[float]) -> tuple[int, int]:
    """SRIQA-Bench protocol inside one group: over all C(n, 2) pairs, a pair is right when the
    predicted order equals the ground-truth order (a predicted tie is right only on a gt tie).
    Returns (right, pairs)."""
    g, p = np.asarray(gt, float), np.asarray(pred, float)
    i, j = np.triu_indices(len(g), k=1)
    right = np.sign(g[i] - g[j]) == np.sign(p[i] - p[j])
    return int(right.sum()), len(i)
