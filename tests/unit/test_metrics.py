import math

import numpy as np
import pytest
from scipy import stats

from qbench.core.records import Prediction, Sample
from qbench.scoring import formulas as metrics
from qbench.scoring.metrics import Conventions, Scored, evaluate


def score_task(pred, gt, gt_norm=None, **conventions) -> dict:
    samples = [Sample(id=str(i), task="t", kind="score", images=(), mos=float(g),
                      mos_norm=None if gt_norm is None else float(gt_norm[i]))
               for i, g in enumerate(gt)]
    predictions = {str(i): Prediction(task="t", sample_id=str(i), score=float(p))
                   for i, p in enumerate(pred)}
    return evaluate(Scored.of("t", "score", samples, predictions, Conventions(**conventions)))


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    gt = rng.uniform(1, 5, 200)
    pred = gt + rng.normal(0, 0.8, 200)
    return pred, gt


def test_correlations_match_scipy(data):
    pred, gt = data
    assert metrics.plcc(pred, gt) == pytest.approx(stats.pearsonr(pred, gt)[0])
    assert metrics.srcc(pred, gt) == pytest.approx(stats.spearmanr(pred, gt)[0])
    assert metrics.krcc(pred, gt) == pytest.approx(stats.kendalltau(pred, gt, variant="b")[0])
    assert metrics.rmse(pred, gt) == pytest.approx(np.sqrt(np.mean((pred - gt) ** 2)))


def test_constant_predictions_give_undefined_not_error():
    assert math.isnan(metrics.plcc([3, 3, 3], [1, 2, 3]))
    out = score_task([3, 3, 3, 3], [1, 2, 3, 4], [1, 2, 3, 4])
    assert out["srcc"] is None and out["plcc_logistic"] is None and out["n_ok"] == 4
    assert score_task([3, 4], [1, 2])["plcc"] is None   # fewer than three scored: no correlation


def test_logistic_fit_recovers_a_logistic_mapping():
    x = np.linspace(-3, 3, 300)
    true = (4.5, 1.2, 0.3, 0.7)
    y = metrics.logistic4(x, *true)
    params = metrics.fit_logistic(x, y)
    assert params is not None
    np.testing.assert_allclose(metrics.logistic4(x, *params), y, atol=1e-3)
    # a monotone but non-linear relation: the logistic PLCC beats the raw one
    raw, fitted = metrics.plcc(x, y), metrics.plcc(metrics.logistic4(x, *params), y)
    assert fitted > raw and fitted == pytest.approx(1.0, abs=1e-5)


def test_score_metrics_labels_raw_and_logistic(data):
    pred, gt = data
    out = score_task(pred, gt, gt, score_range=(1.0, 5.0))
    assert out["plcc"] == pytest.approx(stats.pearsonr(pred, gt)[0])
    assert out["plcc_logistic"] >= out["plcc"] - 1e-9
    assert out["rmse"] == pytest.approx(metrics.rmse(pred, gt))
    assert out["rmse_logistic"] <= out["rmse"]
    assert score_task(pred, gt, gt)["rmse"] is None  # other scales get no raw RMSE


def test_dmos_flipping(data):
    pred, gt = data
    dmos = 6 - gt  # lower is better
    assert metrics.srcc(pred, metrics.orient(dmos, lower_better=True)) == pytest.approx(
        stats.spearmanr(pred, gt)[0])
    assert metrics.srcc(pred, metrics.orient(dmos, lower_better=False)) < 0


def test_pairwise_accuracy_with_ties():
    gt = [3.0, 2.0, 2.0, 1.0]
    # pairs: (0,1) gt> (0,2) gt> (0,3) gt> (1,2) tie (1,3) gt> (2,3) gt>
    assert metrics.pairwise_accuracy(gt, [4, 3, 2, 1]) == (5, 6)  # tie predicted as order: wrong
    assert metrics.pairwise_accuracy(gt, [4, 3, 3, 1]) == (6, 6)  # tie predicted on a tie: right
    # (0,1) predicted tie off a gt tie, (1,2) predicted order on a gt tie: both wrong
    assert metrics.pairwise_accuracy(gt, [4, 4, 3, 1]) == (4, 6)
    assert metrics.pairwise_accuracy(gt, [1, 2, 3, 4]) == (0, 6)


def test_pairwise_accuracy_matches_a_loop():
    rng = np.random.default_rng(3)
    gt, pred = rng.integers(0, 4, 12).astype(float), rng.integers(0, 4, 12).astype(float)
    right = sum(metrics.pair_order(gt[i], gt[j]) == metrics.pair_order(pred[i], pred[j])
                for i in range(12) for j in range(i + 1, 12))
    assert metrics.pairwise_accuracy(gt, pred) == (right, 66)


def test_degradation_metrics_table2_layout():
    true_cls = ["noise", "noise", "blur", "null", "jpeg", "darken"]
    true_lev = ["slight", "serious", "moderate", "null", "obvious", "slight"]
    pred_cls = ["noise", "noise", "noise", "null", None, "darken"]
    pred_lev = ["slight", "slight", "moderate", "null", None, "slight"]
    samples = [Sample(id=str(i), task="t", kind="degradation", images=(), distortion_class=c,
                      severity=lv) for i, (c, lv) in enumerate(zip(true_cls, true_lev))]
    predictions = {str(i): Prediction(task="t", sample_id=str(i), distortion_class=c, severity=lv)
                   if c else Prediction(task="t", sample_id=str(i), status="unparsed", error="x")
                   for i, (c, lv) in enumerate(zip(pred_cls, pred_lev))}
    out = evaluate(Scored.of("t", "degradation", samples, predictions, Conventions()))
    assert out["class_acc"] == {"noise": 1.0, "blur": 0.0, "jpeg": 0.0, "darken": 1.0, "null": 1.0}
    assert out["level_acc"] == {"noise": 0.5, "blur": 0.0, "jpeg": 0.0, "darken": 1.0}
    assert out["class_acc_mean"] == pytest.approx(3 / 5)
    assert out["level_acc_mean"] == pytest.approx(1.5 / 4)
    matrix = np.array(out["confusion"]["matrix"])
    assert matrix.sum() == 5  # the unparsed sample is in no cell
    labels = out["confusion"]["labels"]
    assert matrix[labels.index("blur"), labels.index("noise")] == 1
