"""Outcome statistics: how good a version's answers were once the truth arrived.

Pure functions over arrays of labels and scores (no I/O): the metrics (accuracy, ROC AUC
and log loss for binary classifiers, MAE and RMSE for regressors), a regression test
between two versions, and a confidence-based estimate of a classifier's performance before
its labels arrive (CBPE, as NannyML's).

**The regression test.** A version is flagged only when it is worse with statistical
evidence, never on a point difference: the test is one-sided, on ``worse_by`` (the
candidate's metric minus the baseline's, signed so that positive is worse), and a version
regressed when the lower bound of a one-sided ``confidence`` interval of ``worse_by`` is
above ``tolerance``. Accuracy, log loss and MAE are means of per-row losses, so Welch's
normal approximation on the two means holds (the versions answered different requests:
the samples are independent); RMSE uses it on the squared errors through the delta method;
AUC uses Hanley and McNeil's standard error. Why not a bootstrap: the gate judges every
controller pass, on thousands of labels, and must give the same answer for the same
evidence; a closed form is exact enough at the sample sizes where a gate may conclude
(``min_labels``), costs microseconds and needs no random draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

__all__ = [
    "Comparison",
    "Estimate",
    "Metric",
    "accuracy",
    "auc",
    "cbpe",
    "compare",
    "estimate_parted",
    "log_loss",
    "mae",
    "metric_value",
    "metrics_for",
    "rmse",
]

Floats = npt.NDArray[np.float64]
_EPS = 1e-15
_NORMAL = NormalDist()


class Metric(StrEnum):
    """What a version's answers are judged by."""

    ACCURACY = "accuracy"
    """Share of rows whose predicted class (score at or above 0.5) is the label."""
    AUC = "auc"
    """Area under the ROC curve of the positive-class score."""
    LOG_LOSS = "log_loss"
    """Mean negative log likelihood of the label under the score."""
    MAE = "mae"
    """Mean absolute error of a regressor."""
    RMSE = "rmse"
    """Root mean squared error of a regressor."""

    @property
    def higher_is_better(self) -> bool:
        return self in (Metric.ACCURACY, Metric.AUC)

    @property
    def classification(self) -> bool:
        return self in (Metric.ACCURACY, Metric.AUC, Metric.LOG_LOSS)


CLASSIFIER_METRICS = (Metric.ACCURACY, Metric.AUC, Metric.LOG_LOSS)
REGRESSOR_METRICS = (Metric.MAE, Metric.RMSE)


def _floats(values: npt.ArrayLike) -> Floats:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def accuracy(labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float = 0.5) -> float:
    """Share of rows whose class (``score >= threshold``) equals the 0/1 label."""
    y, s = _floats(labels), _floats(scores)
    return float(np.mean((s >= threshold) == (y >= 0.5)))


def auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """ROC AUC by the rank-sum (Mann-Whitney) statistic, ties counted half; ``None``
    when one class is absent (the area is undefined)."""
    y, s = _floats(labels) >= 0.5, _floats(scores)
    positives = int(y.sum())
    negatives = y.size - positives
    if not positives or not negatives:
        return None
    ranks = _average_ranks(s)
    rank_sum = float(ranks[y].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _average_ranks(values: Floats) -> Floats:
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    # each run of equal values gets the mean of the ranks it spans
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _row_log_loss(y: Floats, s: Floats) -> Floats:
    p = np.clip(s, _EPS, 1 - _EPS)
    return np.asarray(-(y * np.log(p) + (1 - y) * np.log(1 - p)), dtype=np.float64)


def log_loss(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Mean negative log likelihood of 0/1 labels under the positive-class probability."""
    return float(np.mean(_row_log_loss(_floats(labels), _floats(scores))))


def mae(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> float:
    return float(np.mean(np.abs(_floats(predictions) - _floats(labels))))


def rmse(labels: npt.ArrayLike, predictions: npt.ArrayLike) -> float:
    return math.sqrt(float(np.mean((_floats(predictions) - _floats(labels)) ** 2)))


def metric_value(metric: Metric, labels: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """``metric`` over the rows; ``None`` with no rows (or an AUC with one class)."""
    y = _floats(labels)
    if not y.size:
        return None
    if metric is Metric.ACCURACY:
        return accuracy(y, scores)
    if metric is Metric.AUC:
        return auc(y, scores)
    if metric is Metric.LOG_LOSS:
        return log_loss(y, scores)
    if metric is Metric.MAE:
        return mae(y, scores)
    return rmse(y, scores)


def metrics_for(
    labels: npt.ArrayLike, scores: npt.ArrayLike, *, classifier: bool
) -> dict[str, float]:
    """Every metric of the task that is defined on these rows."""
    chosen = CLASSIFIER_METRICS if classifier else REGRESSOR_METRICS
    values = {m.value: metric_value(m, labels, scores) for m in chosen}
    return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Comparison:
    """A candidate version's metric against a baseline's, with the test's evidence."""

    metric: Metric
    baseline: float | None
    candidate: float | None
    worse_by: float | None
    """Candidate minus baseline, signed so that positive is worse."""
    bound: float | None
    """Lower bound of the one-sided ``confidence`` interval of ``worse_by``."""
    p_value: float | None
    """Of ``worse_by <= tolerance``: small when the candidate is surely worse."""
    regressed: bool
    baseline_rows: int
    candidate_rows: int
    confidence: float
    tolerance: float

    def to_reading(self) -> dict[str, float]:
        """The numbers for a gate reading or a status line (``None`` left out)."""
        values = {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "worse_by": self.worse_by,
            "bound": self.bound,
            "p_value": self.p_value,
            "baseline_labels": float(self.baseline_rows),
            "candidate_labels": float(self.candidate_rows),
            "tolerance": self.tolerance,
        }
        return {k: float(v) for k, v in values.items() if v is not None}


def compare(
    metric: Metric,
    baseline: tuple[npt.ArrayLike, npt.ArrayLike],
    candidate: tuple[npt.ArrayLike, npt.ArrayLike],
    *,
    confidence: float = 0.95,
    tolerance: float = 0.0,
) -> Comparison:
    """Is ``candidate`` (labels, scores) worse than ``baseline`` by more than
    ``tolerance``, at ``confidence``? See the module docstring for the test."""
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence {confidence} is not within [0.5, 1)")
    if tolerance < 0:
        raise ValueError(f"tolerance {tolerance} is negative")
    yb, sb = _floats(baseline[0]), _floats(baseline[1])
    yc, sc = _floats(candidate[0]), _floats(candidate[1])
    base = metric_value(metric, yb, sb)
    cand = metric_value(metric, yc, sc)
    empty = Comparison(metric, base, cand, None, None, None, False, yb.size, yc.size,
                       confidence, tolerance)  # fmt: skip
    if base is None or cand is None or yb.size < 2 or yc.size < 2:
        return empty
    worse_by = (base - cand) if metric.higher_is_better else (cand - base)
    se = math.sqrt(_variance_of(metric, yb, sb, base) + _variance_of(metric, yc, sc, cand))
    z = _NORMAL.inv_cdf(confidence)
    if se == 0.0:
        p_value = 0.0 if worse_by > tolerance else 1.0
        bound = worse_by
    else:
        p_value = 1.0 - _NORMAL.cdf((worse_by - tolerance) / se)
        bound = worse_by - z * se
    return Comparison(metric, base, cand, worse_by, bound, p_value, bound > tolerance,
                      yb.size, yc.size, confidence, tolerance)  # fmt: skip


def _variance_of(metric: Metric, y: Floats, s: Floats, value: float) -> float:
    """Sampling variance of one version's metric estimate."""
    n = y.size
    if metric is Metric.AUC:
        return _hanley_mcneil(value, int((y >= 0.5).sum()), int((y < 0.5).sum()))
    if metric is Metric.ACCURACY:
        losses = ((s >= 0.5) != (y >= 0.5)).astype(np.float64)
    elif metric is Metric.LOG_LOSS:
        losses = _row_log_loss(y, s)
    elif metric is Metric.MAE:
        losses = np.abs(s - y)
    else:
        squared = (s - y) ** 2
        mse_variance = float(np.var(squared, ddof=1)) / n
        # delta method: d sqrt(m) = dm / (2 sqrt(m))
        return mse_variance / (4 * value * value) if value > 0 else mse_variance
    return float(np.var(losses, ddof=1)) / n


def _hanley_mcneil(area: float, positives: int, negatives: int) -> float:
    q1 = area / (2 - area)
    q2 = 2 * area * area / (1 + area)
    numerator = (
        area * (1 - area)
        + (positives - 1) * (q1 - area * area)
        + (negatives - 1) * (q2 - area * area)
    )
    return max(0.0, numerator / (positives * negatives))


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a calibrated classifier's own scores say its metrics will be (CBPE)."""

    rows: int
    accuracy: float
    auc: float | None
    log_loss: float

    def to_dict(self) -> dict[str, float | None]:
        return {"rows": float(self.rows), "accuracy": self.accuracy, "auc": self.auc,
                "log_loss": self.log_loss}  # fmt: skip


def cbpe(scores: npt.ArrayLike, threshold: float = 0.5) -> Estimate | None:
    """Confidence-based performance estimation: if ``scores`` are calibrated
    probabilities of the positive class, a row predicted positive is right with
    probability ``s``, negative with ``1 - s``; expected confusion counts at every
    threshold give the expected ROC curve and so its area. ``None`` with no rows."""
    s = np.clip(_floats(scores), 0.0, 1.0)
    if not s.size:
        return None
    expected_accuracy = float(np.mean(np.where(s >= threshold, s, 1 - s)))
    p = np.clip(s, _EPS, 1 - _EPS)
    expected_log_loss = float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))
    return Estimate(s.size, expected_accuracy, _expected_auc(s), expected_log_loss)


def _expected_auc(s: Floats) -> float | None:
    positives, negatives = float(s.sum()), float((1 - s).sum())
    if positives <= 0 or negatives <= 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    ordered = s[order]
    tp = np.cumsum(ordered)
    fp = np.cumsum(1 - ordered)
    # one ROC point per distinct score: tied rows cross the threshold together
    last_of_run = np.r_[ordered[1:] != ordered[:-1], True]
    tpr = np.r_[0.0, tp[last_of_run] / positives]
    fpr = np.r_[0.0, fp[last_of_run] / negatives]
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))


def estimate_parted(
    estimated: float, realised: float, rows: int, *, tolerance: float = 0.05, z: float = 3.0
) -> bool:
    """Have the CBPE estimate and the realised accuracy parted? Beyond ``tolerance`` plus
    ``z`` standard errors of the realised figure (few labels are noisy, not a miscalibrated
    model): the scores are no longer calibrated, or the world moved under them."""
    if rows < 1:
        return False
    se = math.sqrt(max(realised * (1 - realised), 0.0) / rows)
    return abs(estimated - realised) > tolerance + z * se
