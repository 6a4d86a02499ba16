"""Vectorised bootstrap (qbench.scoring.bootstrap) against the plain loop of scipy calls it replaces,
on one synthetic test set of a common size (KonIQ's 2,010 test images), in one run.

    OMP_NUM_THREADS=1 python benchmarks/bootstrap_speed.py [--n 2010] [--resamples 1000]

Prints both intervals (their draws differ, so they agree to Monte-Carlo noise) and the ratio.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from qbench.scoring.bootstrap import bootstrap_interval, pearson_statistic, spearman_statistic


def loop_interval(correlate, x: np.ndarray, y: np.ndarray, resamples: int, seed: int
                  ) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        draw = rng.integers(0, len(x), len(x))
        values.append(correlate(x[draw], y[draw])[0])
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2010)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, args.n)
    pred = np.round(gt + rng.normal(0, 0.6, args.n), 2)   # two decimals, as the prompt asks: ties
    print(f"n = {args.n}, {args.resamples} resamples")
    for name, make, correlate in (("SRCC", spearman_statistic, stats.spearmanr),
                                  ("PLCC", pearson_statistic, stats.pearsonr)):
        start = time.perf_counter()
        interval = bootstrap_interval(make(pred, gt), args.n, resamples=args.resamples, seed=1)
        vectorised = time.perf_counter() - start
        start = time.perf_counter()
        low, high = loop_interval(correlate, pred, gt, args.resamples, seed=1)
        looped = time.perf_counter() - start
        print(f"{name}: vectorised [{interval.low:.4f}, {interval.high:.4f}] {vectorised:.2f} s | "
              f"scipy loop [{low:.4f}, {high:.4f}] {looped:.2f} s | "
              f"ratio loop / vectorised {looped / vectorised:.1f}x")


if __name__ == "__main__":
    main()
