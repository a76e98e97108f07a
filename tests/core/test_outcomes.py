"""Outcome statistics against scikit-learn, the regression test's calls, and CBPE."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from modelplane.core.gates import Outcome, WindowStats, evaluate_gate
from modelplane.core.outcomes import (
    Comparison,
    Metric,
    accuracy,
    auc,
    cbpe,
    compare,
    estimate_parted,
    log_loss,
    mae,
    metric_value,
    metrics_for,
    rmse,
)
from modelplane.spec.rollout import OutcomeGate


def calibrated(n: int, seed: int, *, quality: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from the scores themselves, so the scores are calibrated."""
    rng = np.random.default_rng(seed)
    scores = 1 / (1 + np.exp(-quality * rng.normal(size=n)))
    labels = (rng.random(n) < scores).astype(float)
    return labels, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classifier_metrics_equal_scikit_learn(seed: int) -> None:
    y, s = calibrated(2000, seed)
    s = np.round(s, 2)  # ties, which AUC must count half
    assert accuracy(y, s) == pytest.approx(skm.accuracy_score(y, s >= 0.5))
    assert auc(y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert log_loss(y, s) == pytest.approx(skm.log_loss(y, np.clip(s, 1e-15, 1 - 1e-15)))


def test_regressor_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(size=500)
    p = y + rng.normal(scale=0.3, size=500)
    assert mae(y, p) == pytest.approx(skm.mean_absolute_error(y, p))
    assert rmse(y, p) == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
    assert set(metrics_for(y, p, classifier=False)) == {"mae", "rmse"}


def test_undefined_metrics_are_none() -> None:
    assert auc([1, 1, 1], [0.2, 0.5, 0.9]) is None
    assert metric_value(Metric.MAE, [], []) is None
    assert "auc" not in metrics_for([1, 1], [0.6, 0.7], classifier=True)


@pytest.mark.parametrize("metric", list(Metric))
def test_a_worse_version_is_a_regression(metric: Metric) -> None:
    if metric.classification:
        base = calibrated(3000, 1)
        y, s = calibrated(3000, 2)
        worse = (y, np.clip(1 - s + 0.0, 0, 1) * 0.5 + 0.25)  # inverted, flattened
    else:
        rng = np.random.default_rng(5)
        yb, yc = rng.normal(size=3000), rng.normal(size=3000)
        base = (yb, yb + rng.normal(scale=0.2, size=3000))
        worse = (yc, yc + rng.normal(scale=0.6, size=3000))
    result = compare(metric, base, worse)
    assert result.regressed, result
    assert result.worse_by is not None
    assert result.worse_by > 0
    assert result.p_value is not None
    assert result.p_value < 0.05
    assert result.bound is not None
    assert 0 < result.bound < result.worse_by


@pytest.mark.parametrize("metric", list(Metric))
def test_an_equal_version_is_not_a_regression(metric: Metric) -> None:
    if metric.classification:
        base, same = calibrated(3000, 1), calibrated(3000, 2)
    else:
        rng = np.random.default_rng(6)
        yb, yc = rng.normal(size=3000), rng.normal(size=3000)
        base = (yb, yb + rng.normal(scale=0.3, size=3000))
        same = (yc, yc + rng.normal(scale=0.3, size=3000))
    assert not compare(metric, base, same).regressed


def test_a_point_difference_on_few_labels_is_not_evidence() -> None:
    base = ([1, 0, 1, 0, 1], [0.9, 0.1, 0.8, 0.2, 0.7])
    worse = ([1, 0, 1, 0, 1], [0.9, 0.6, 0.8, 0.2, 0.7])  # one more mistake of five
    result = compare(Metric.ACCURACY, base, worse)
    assert result.worse_by == pytest.approx(0.2)
    assert not result.regressed


def test_tolerance_admits_a_small_known_loss() -> None:
    base = calibrated(20000, 1, quality=3.0)
    y, s = calibrated(20000, 2, quality=2.6)
    strict = compare(Metric.AUC, base, (y, s))
    lenient = compare(Metric.AUC, base, (y, s), tolerance=0.05)
    assert strict.regressed
    assert not lenient.regressed


def test_compare_refuses_bad_settings_and_waits_on_no_rows() -> None:
    with pytest.raises(ValueError, match="confidence"):
        compare(Metric.MAE, ([1.0], [1.0]), ([1.0], [1.0]), confidence=1.0)
    with pytest.raises(ValueError, match="tolerance"):
        compare(Metric.MAE, ([1.0], [1.0]), ([1.0], [1.0]), tolerance=-1)
    empty = compare(Metric.MAE, ([], []), ([1.0, 2.0], [1.0, 2.0]))
    assert empty.worse_by is None
    assert not empty.regressed


def test_cbpe_estimates_calibrated_scores_before_labels() -> None:
    y, s = calibrated(50000, 7)
    estimate = cbpe(s)
    assert estimate is not None
    assert estimate.auc is not None
    assert estimate.accuracy == pytest.approx(skm.accuracy_score(y, s >= 0.5), abs=0.01)
    assert estimate.auc == pytest.approx(skm.roc_auc_score(y, s), abs=0.01)
    assert estimate.log_loss == pytest.approx(skm.log_loss(y, s), abs=0.02)
    assert not estimate_parted(estimate.accuracy, accuracy(y, s), y.size)


def test_cbpe_parts_from_reality_when_scores_stop_being_calibrated() -> None:
    y, s = calibrated(5000, 8)
    overconfident = np.where(s >= 0.5, 0.99, 0.01)  # same classes, claims near certainty
    estimate = cbpe(overconfident)
    assert estimate is not None
    assert estimate_parted(estimate.accuracy, accuracy(y, overconfident), y.size)
    assert cbpe([]) is None
    assert not estimate_parted(0.9, 0.1, 0)


def gate_result(comparison: Comparison | None, *, shadow_step: bool = False, **kw: Any) -> Any:
    gate = OutcomeGate(**kw)
    stats = WindowStats(outcomes={gate.label: comparison} if comparison is not None else {})
    return evaluate_gate(gate, stats, shadow_step=shadow_step)


def test_the_outcome_gate_fails_a_regression_and_waits_for_labels() -> None:
    base = calibrated(3000, 1)
    y, s = calibrated(3000, 2)
    worse = compare(Metric.AUC, base, (y, 1 - s))
    failed = gate_result(worse, min_labels=100)
    assert failed.outcome is Outcome.FAIL
    assert "worse by at least" in failed.reason
    assert failed.reading["candidate_labels"] == 3000
    fine = gate_result(compare(Metric.AUC, base, (y, s)), min_labels=100)
    assert fine.outcome is Outcome.PASS
    few = gate_result(worse, min_labels=5000)
    assert few.outcome is Outcome.INCONCLUSIVE
    assert "waiting for labels" in few.reason
    assert gate_result(None).outcome is Outcome.INCONCLUSIVE
    assert gate_result(worse, shadow_step=True).outcome is Outcome.PASS
