"""Bootstrap intervals and the paired bootstrap (qbench.scoring.bootstrap)."""
import math

import numpy as np
import pytest
from scipy import stats

from qbench.core.protocol import CLASSES, LEVELS
from qbench.core.records import Prediction, Sample
from qbench.scoring.bootstrap import (
    accuracy_statistic,
    bootstrap_interval,
    looped,
    paired_bootstrap,
    pearson_statistic,
    ratio_statistic,
    spearman_statistic,
)
from qbench.scoring.metrics import Conventions, Scored, evaluate, intervals


def bivariate(rng, n, rho):
    """n draws of a standard bivariate normal with correlation rho."""
    x = rng.normal(size=n)
    return x, rho * x + math.sqrt(1 - rho ** 2) * rng.normal(size=n)


def counts_of(draws, n):
    return np.stack([np.bincount(d, minlength=n) for d in draws])


def test_resampled_correlations_equal_scipy_on_the_resampled_data_ties_included():
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=60), 1)          # rounding makes ties
    y = np.round(x + rng.normal(size=60), 0)
    draws = rng.integers(0, 60, size=(8, 60))
    counts = counts_of(draws, 60)
    spearman = spearman_statistic(x, y)(counts)
    pearson = pearson_statistic(x, y)(counts)
    for k, d in enumerate(draws):
        assert spearman[k] == pytest.approx(stats.spearmanr(x[d], y[d])[0], abs=1e-12)
        assert pearson[k] == pytest.approx(stats.pearsonr(x[d], y[d])[0], abs=1e-12)


@pytest.mark.parametrize("name, truth", [
    ("plcc", lambda rho: rho),
    ("srcc", lambda rho: 6 / math.pi * math.asin(rho / 2)),  # Spearman of a bivariate normal
])
def test_interval_covers_the_true_correlation_at_about_the_nominal_rate(name, truth):
    rng = np.random.default_rng(11)
    rho, n, trials = 0.6, 120, 200
    make = pearson_statistic if name == "plcc" else spearman_statistic
    covered = 0
    for trial in range(trials):
        x, y = bivariate(rng, n, rho)
        interval = bootstrap_interval(make(x, y), n, resamples=1000, seed=trial)
        covered += interval.low <= truth(rho) <= interval.high
    # nominal 0.95; 200 trials give a binomial sd of ~0.015, and the percentile bootstrap runs
    # slightly under nominal at this n
    assert 0.88 <= covered / trials <= 0.99


def test_accuracy_interval_covers_the_true_rate():
    rng = np.random.default_rng(5)
    p, n, trials = 0.7, 150, 200
    covered = 0
    for trial in range(trials):
        interval = bootstrap_interval(accuracy_statistic(rng.random(n) < p), n, resamples=1000,
                                      seed=trial)
        covered += interval.low <= p <= interval.high
    assert 0.88 <= covered / trials <= 0.99


def test_macro_accuracy_is_the_mean_of_per_group_accuracies():
    correct = [True, False, True, True, False, None]
    groups = ["a", "a", "b", "b", "b", None]
    statistic = accuracy_statistic([bool(c) for c in correct], groups)
    assert statistic(np.ones((1, 6)))[0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # a resample holding only group "b" items is the accuracy of "b" alone
    assert statistic(np.array([[0, 0, 1, 1, 1, 3]]))[0] == pytest.approx(2 / 3)


def test_same_seed_same_interval_other_seed_other_interval():
    rng = np.random.default_rng(0)
    x, y = bivariate(rng, 80, 0.5)
    first = bootstrap_interval(spearman_statistic(x, y), 80, seed=1)
    assert first == bootstrap_interval(spearman_statistic(x, y), 80, seed=1)
    assert first != bootstrap_interval(spearman_statistic(x, y), 80, seed=2)
    assert first.resamples == 2000 and first.low < first.estimate < first.high


def test_undefined_statistic_gives_nan_interval_and_bad_arguments_raise():
    constant = bootstrap_interval(pearson_statistic([2.0] * 10, range(10)), 10)
    assert math.isnan(constant.estimate) and math.isnan(constant.low)
    with pytest.raises(ValueError, match="confidence level"):
        bootstrap_interval(pearson_statistic(range(10), range(10)), 10, level=95)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval(pearson_statistic(range(10), range(10)), 10, resamples=0)


def test_resamples_that_are_constant_are_counted_not_fatal():
    # two distinct values among 6: some resamples draw a single value and have no correlation
    interval = bootstrap_interval(pearson_statistic([1, 1, 1, 1, 1, 2], [1, 2, 3, 4, 5, 6]), 6,
                                  resamples=500)
    assert 0 < interval.undefined < 500 and math.isfinite(interval.low)


def test_paired_bootstrap_finds_a_planted_difference():
    rng = np.random.default_rng(21)
    n, found = 200, 0
    for trial in range(20):
        gt = rng.normal(size=n)
        better = gt + 0.5 * rng.normal(size=n)    # rho ~ 0.89
        worse = gt + 1.2 * rng.normal(size=n)     # rho ~ 0.64
        result = paired_bootstrap(spearman_statistic(better, gt), spearman_statistic(worse, gt),
                                  n, resamples=1000, seed=trial)
        found += result.verdict() == "A better" and result.p_value < 0.05
        assert result.difference == pytest.approx(
            stats.spearmanr(better, gt)[0] - stats.spearmanr(worse, gt)[0])
    assert found >= 19
    swapped = paired_bootstrap(pearson_statistic(worse, gt), pearson_statistic(better, gt), n)
    assert swapped.verdict() == "B better" and swapped.high < 0


def test_paired_bootstrap_rarely_reports_a_null_difference():
    rng = np.random.default_rng(22)
    n, trials, false_alarms, p_values = 150, 60, 0, []
    for trial in range(trials):
        gt = rng.normal(size=n)
        a, b = gt + rng.normal(size=n), gt + rng.normal(size=n)   # equally good, different noise
        result = paired_bootstrap(pearson_statistic(a, gt), pearson_statistic(b, gt), n,
                                  resamples=1000, seed=trial)
        false_alarms += result.verdict() != "no significant difference"
        p_values.append(result.p_value)
    assert false_alarms / trials <= 0.15        # nominal 0.05
    assert 0.3 <= np.median(p_values) <= 0.7    # p-values roughly uniform under the null


def test_every_headline_interval_estimates_the_metric_the_registry_reports():
    """Intervals come from the metric registry: for each headline metric the bootstrap's own
    estimate is the value evaluation reports (DMOS-like truth oriented, as CSIQ)."""
    rng = np.random.default_rng(9)
    dmos = rng.uniform(0, 1, 50)
    samples = [Sample(id=f"s{i}", task="unc-score", kind="score", images=(), mos=float(v))
               for i, v in enumerate(dmos)]
    predictions = {s.id: Prediction(task=s.task, sample_id=s.id, score=float(5 - 4 * v + rng.normal(0, .5)))
                   for s, v in zip(samples, dmos)}
    predictions["s0"] = Prediction(task="unc-score", sample_id="s0", status="unparsed", error="x")
    scored = Scored.of("unc-score", "score", samples, predictions,
                       Conventions(truth_lower_better=True))
    reported = evaluate(scored)
    found = intervals(scored, resamples=300)
    assert set(found) == {"plcc", "plcc_logistic", "srcc", "krcc"}
    for name, interval in found.items():
        assert interval.estimate == pytest.approx(reported[name], abs=1e-9), name
        assert reported[name] > 0.5   # orientation applied: DMOS flipped, scores not
        assert interval.low < reported[name] < interval.high

    classes = [CLASSES[i % 5] for i in range(60)]
    levels = ["null" if c == "null" else LEVELS[i % 5] for i, c in enumerate(classes)]
    samples = [Sample(id=f"d{i}", task="unc-degradation", kind="degradation", images=(),
                      distortion_class=c, severity=lv) for i, (c, lv) in enumerate(zip(classes, levels))]
    said = [(c if rng.random() < 0.8 else "noise", lv if rng.random() < 0.6 else "slight")
            for c, lv in zip(classes, levels)]
    predictions = {s.id: Prediction(task=s.task, sample_id=s.id, distortion_class=c, severity=lv)
                   for s, (c, lv) in zip(samples, said)}
    scored = Scored.of("unc-degradation", "degradation", samples, predictions, Conventions())
    reported = evaluate(scored)
    found = intervals(scored, resamples=300)
    assert set(found) == {"class_acc_mean", "level_acc_mean"}
    for name, interval in found.items():
        assert interval.estimate == pytest.approx(reported[name], abs=1e-12)
        assert interval.low < reported[name] < interval.high


def test_looped_and_ratio_statistics_equal_the_statistic_on_the_resampled_data():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=30), rng.normal(size=30)
    counts = np.stack([np.bincount(rng.integers(0, 30, 30), minlength=30) for _ in range(5)])
    values = looped(lambda a, b: stats.kendalltau(a, b)[0], x, y)(counts)
    for row, value in zip(counts, values):
        index = np.repeat(np.arange(30), row)
        assert value == pytest.approx(stats.kendalltau(x[index], y[index])[0])
    right, total = np.array([3.0, 1.0, 0.0]), np.array([3.0, 3.0, 3.0])
    drawn = np.array([[1, 1, 1], [3, 0, 0], [0, 0, 3]])
    assert ratio_statistic(right, total)(drawn) == pytest.approx([4 / 9, 1.0, 0.0])
