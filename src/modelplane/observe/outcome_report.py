"""Outcomes by version and by feature-set version: metrics, coverage, latency, regressions.

:func:`outcomes_by_version` is the one report (``modelplane outcomes``, the console, the
evidence pack and ``status`` read it): per model version, the rows answered and labelled
(label coverage), how late labels came (label latency), the task's metrics, each business
outcome's sum and mean, and for a classifier the CBPE estimate over its latest answers,
labelled or not, with an alert when the estimate on the labelled rows parts from what they
realised. Versions are compared in the order they first answered, each with the one before
it; a comparison is a *regression* only with statistical evidence
(:func:`modelplane.core.outcomes.compare`). :func:`compare_versions` is the rollout
controller's reading for the ``outcome`` gate.

The score a row is judged by is one output of the answer: the one named, else the first of
``probabilities``, ``probability``, ``proba``, ``score``, ``prediction``, ``predictions``,
``value`` it has, else its first numeric output; a two-class probability pair counts as
the positive class's probability. The task, unless told, is a classifier when every score
is a probability and either the answers say they are class probabilities (the score is
``probabilities``, ``probability`` or ``proba``, or a ``label`` output stands beside it) or
nearly every label (:data:`CLASS_SHARE`) is 0 or 1; else a regressor. A classifier's labels
outside its classes are counted and left out of its metrics (``labels_left_out``), so one
stray label cannot turn the report into a regressor's.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from modelplane.core.outcomes import (
    CLASSIFIER_METRICS,
    Comparison,
    Metric,
    cbpe,
    compare,
    estimate_parted,
    metrics_for,
)
from modelplane.observe.outcomes import LABEL, JoinedRow, OutcomeStore
from modelplane.store.db import read_session
from modelplane.store.schema import OutcomeRow

__all__ = [
    "FeatureSetOutcomes",
    "OutcomeReport",
    "Regression",
    "VersionOutcomes",
    "compare_versions",
    "outcome_events",
    "outcomes_by_version",
    "score_of",
]

_SCORE_NAMES = ("probabilities", "probability", "proba", "score", "prediction",
                "predictions", "value")  # fmt: skip
MIN_LABELS = 30
"""Labelled rows each version needs before versions are compared."""
CLASSES = (0.0, 1.0)
"""A binary classifier's labels; others are left out of its metrics."""
CLASS_SHARE = 0.9
"""Share of labels in :data:`CLASSES` that, with probability scores, makes a classifier
even when the answers do not say they are class probabilities."""
_CLASS_SCORES = ("probabilities", "probability", "proba")
_CLASS_OUTPUT = "label"


def score_of(outputs: Mapping[str, Any], output: str | None = None) -> float | None:
    """The score of one answered row (see the module docstring); ``None`` when it has none."""
    name = output or _pick(outputs)
    if name is None or name not in outputs:
        return None
    value = outputs[name]
    if isinstance(value, list):
        if len(value) == 2:
            value = value[1]
        elif len(value) == 1:
            value = value[0]
        else:
            return None
    if isinstance(value, bool | int | float):
        return float(value)
    return None


def _pick(outputs: Mapping[str, Any]) -> str | None:
    for name in _SCORE_NAMES:
        if name in outputs:
            return name
    for name, value in outputs.items():
        if isinstance(value, bool | int | float):
            return name
    return None


@dataclass(frozen=True, slots=True)
class VersionOutcomes:
    version: str
    answered_rows: int
    labelled_rows: int
    coverage: float | None
    """Labelled rows over answered rows (answers still kept)."""
    label_latency_p50_s: float | None
    label_latency_p90_s: float | None
    metrics: dict[str, float]
    business: dict[str, dict[str, float]]
    """Each business outcome's ``sum``, ``mean`` and ``rows``."""
    estimate: dict[str, float | None] | None
    """CBPE over the latest answers, labelled or not (classifiers)."""
    estimate_parted: bool
    """CBPE's accuracy on the labelled rows parted from the accuracy they realised."""
    first_answer_at: float | None
    last_answer_at: float | None
    labels_left_out: int = 0
    """A classifier's labels outside :data:`CLASSES`, not in ``labelled_rows``."""


@dataclass(frozen=True, slots=True)
class FeatureSetOutcomes:
    feature_set: str
    """``set:version``."""
    labelled_rows: int
    metrics: dict[str, float]


@dataclass(frozen=True, slots=True)
class Regression:
    """One version compared with the one before it."""

    baseline: str
    candidate: str
    comparison: Comparison

    @property
    def regressed(self) -> bool:
        return self.comparison.regressed

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        reading = c.to_reading()
        values = {"baseline_value": reading.pop("baseline", None),
                  "candidate_value": reading.pop("candidate", None)}  # fmt: skip
        return {**reading, **values, "baseline": self.baseline, "candidate": self.candidate,
                "metric": c.metric.value, "regressed": c.regressed,
                "confidence": c.confidence}  # fmt: skip


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    endpoint: str
    task: str | None
    """``classifier``, ``regressor``, or ``None`` before any label joined."""
    score_output: str | None
    metric: str | None
    """The metric versions are compared by."""
    versions: list[VersionOutcomes] = field(default_factory=list)
    feature_sets: list[FeatureSetOutcomes] = field(default_factory=list)
    comparisons: list[Regression] = field(default_factory=list)
    labels_left_out: int = 0
    """A classifier's labels outside :data:`CLASSES`, left out of every metric."""

    @property
    def notes(self) -> list[str]:
        """What the reader should know of the figures (not events: nothing regressed)."""
        if not self.labels_left_out:
            return []
        n = self.labels_left_out
        classes = ",".join(f"{c:g}" for c in CLASSES)
        by_version = ", ".join(
            f"{v.version} {v.labels_left_out}" for v in self.versions if v.labels_left_out
        )
        return [
            f"{n} label{'' if n == 1 else 's'} outside the classes {{{classes}}} left out"
            f" ({by_version})"
        ]

    @property
    def regressions(self) -> list[Regression]:
        return [c for c in self.comparisons if c.regressed]

    @property
    def alerts(self) -> list[str]:
        """One line per event: each regression and each parted estimate."""
        lines = []
        for r in self.regressions:
            c = r.comparison
            lines.append(
                f"{r.candidate} is worse than {r.baseline} on {c.metric.value}:"
                f" {c.candidate:.4g} vs {c.baseline:.4g} (worse by at least {c.bound:.3g}"
                f" at {c.confidence:.0%}, p={c.p_value:.2g})"
            )
        for v in self.versions:
            if v.estimate_parted:
                lines.append(
                    f"{v.version}: the CBPE estimate parted from realised accuracy"
                    f" ({v.metrics.get('estimated_accuracy', float('nan')):.3f} estimated,"
                    f" {v.metrics.get('accuracy', float('nan')):.3f} realised)"
                )
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "task": self.task,
            "score_output": self.score_output,
            "metric": self.metric,
            "versions": [asdict(v) for v in self.versions],
            "feature_sets": [asdict(f) for f in self.feature_sets],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "alerts": self.alerts,
            "labels_left_out": self.labels_left_out,
            "notes": self.notes,
        }


def outcomes_by_version(
    engine: Engine,
    endpoint: str,
    *,
    score: str | None = None,
    task: str | None = None,
    metric: Metric | None = None,
    confidence: float = 0.95,
    tolerance: float = 0.0,
    min_labels: int = MIN_LABELS,
    estimate_rows: int = 10_000,
) -> OutcomeReport:
    """The outcome report of ``endpoint``; see the module docstring."""
    store = OutcomeStore(engine)
    answered = store.answered(endpoint)
    rows = store.joined(endpoint)
    scored = [(r, s) for r in rows if (s := score_of(r.outputs, score)) is not None]
    output = score or (_pick(rows[0].outputs) if rows else None)
    classifier = _is_classifier(scored, task, output)
    left_out: dict[str, int] = defaultdict(int)
    if classifier:
        for r, _ in scored:
            if r.value not in CLASSES:
                left_out[r.model_version] += 1
        scored = [pair for pair in scored if pair[0].value in CLASSES]
    versions = sorted(answered, key=lambda v: answered[v][1])
    by_version: dict[str, list[tuple[JoinedRow, float]]] = defaultdict(list)
    for pair in scored:
        by_version[pair[0].model_version].append(pair)
    business = _business(store, engine, endpoint)
    reports = [
        _version(store, endpoint, v, answered.get(v), by_version.get(v, []), business.get(v, {}),
                 classifier, score, estimate_rows, left_out.get(v, 0))
        for v in versions
    ]  # fmt: skip
    chosen = (
        metric or (Metric.AUC if classifier else Metric.RMSE) if classifier is not None else None
    )
    comparisons = _compare_in_order(versions, by_version, chosen, confidence, tolerance, min_labels)
    return OutcomeReport(
        endpoint=endpoint,
        task=None if classifier is None else ("classifier" if classifier else "regressor"),
        score_output=output,
        metric=None if chosen is None else chosen.value,
        versions=reports,
        feature_sets=_by_feature_set(scored, bool(classifier)) if classifier is not None else [],
        comparisons=comparisons,
        labels_left_out=sum(left_out.values()),
    )


def _is_classifier(
    scored: Sequence[tuple[JoinedRow, float]], task: str | None, output: str | None
) -> bool | None:
    if task is not None:
        if task not in ("classifier", "regressor"):
            raise ValueError(f"task '{task}' is not classifier or regressor")
        return task == "classifier"
    if not scored:
        return None
    if not all(0.0 <= s <= 1.0 for _, s in scored):
        return False
    # the answers are class probabilities: a label outside the classes is a bad label, not
    # evidence that the model is a regressor
    if output in _CLASS_SCORES or any(_CLASS_OUTPUT in r.outputs for r, _ in scored[:100]):
        return True
    in_classes = sum(1 for r, _ in scored if r.value in CLASSES)
    return in_classes >= CLASS_SHARE * len(scored)


def _arrays(pairs: Sequence[tuple[JoinedRow, float]]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.fromiter((r.value for r, _ in pairs), dtype=np.float64, count=len(pairs))
    scores = np.fromiter((s for _, s in pairs), dtype=np.float64, count=len(pairs))
    return labels, scores


def _version(
    store: OutcomeStore,
    endpoint: str,
    version: str,
    answered: tuple[int, float, float] | None,
    pairs: Sequence[tuple[JoinedRow, float]],
    business: dict[str, dict[str, float]],
    classifier: bool | None,
    score: str | None,
    estimate_rows: int,
    labels_left_out: int,
) -> VersionOutcomes:
    answered_rows = answered[0] if answered else 0
    labels, scores = _arrays(pairs)
    metrics = metrics_for(labels, scores, classifier=bool(classifier)) if pairs else {}
    latency = np.array([r.arrived_at - r.answered_at for r, _ in pairs], dtype=np.float64)
    estimate, parted = None, False
    if classifier:
        recent = [
            score_of(o, score) for o in store.recent_outputs(endpoint, version, estimate_rows)
        ]
        found = cbpe([s for s in recent if s is not None])
        estimate = found.to_dict() if found is not None else None
        on_labelled = cbpe(scores)
        if on_labelled is not None and "accuracy" in metrics:
            metrics["estimated_accuracy"] = on_labelled.accuracy
            parted = len(pairs) >= MIN_LABELS and estimate_parted(
                on_labelled.accuracy, metrics["accuracy"], len(pairs)
            )
    return VersionOutcomes(
        version=version,
        answered_rows=answered_rows,
        labelled_rows=len(pairs),
        coverage=len(pairs) / answered_rows if answered_rows else None,
        label_latency_p50_s=float(np.quantile(latency, 0.5)) if latency.size else None,
        label_latency_p90_s=float(np.quantile(latency, 0.9)) if latency.size else None,
        metrics=metrics,
        business=business,
        estimate=estimate,
        estimate_parted=parted,
        first_answer_at=answered[1] if answered else None,
        last_answer_at=answered[2] if answered else None,
        labels_left_out=labels_left_out,
    )


def _business(store: OutcomeStore, engine: Engine, endpoint: str) -> dict[str, dict[str, Any]]:
    """Per version, each business outcome's sum, mean and rows."""
    with read_session(engine) as session:
        names = session.scalars(
            select(OutcomeRow.name)
            .where(OutcomeRow.endpoint == endpoint, OutcomeRow.name != LABEL)
            .distinct()
        ).all()
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for name in sorted(names):
        values: dict[str, list[float]] = defaultdict(list)
        for row in store.joined(endpoint, name=name):
            values[row.model_version].append(row.value)
        for version, found in values.items():
            total = float(sum(found))
            out[version][name] = {"sum": total, "mean": total / len(found),
                                  "rows": float(len(found))}  # fmt: skip
    return out


def _by_feature_set(
    scored: Sequence[tuple[JoinedRow, float]], classifier: bool
) -> list[FeatureSetOutcomes]:
    groups: dict[str, list[tuple[JoinedRow, float]]] = defaultdict(list)
    for pair in scored:
        for feature_set in pair[0].feature_sets:
            groups[feature_set].append(pair)
    out = []
    for feature_set in sorted(groups):
        labels, scores = _arrays(groups[feature_set])
        metrics = metrics_for(labels, scores, classifier=classifier)
        out.append(FeatureSetOutcomes(feature_set, labels.size, metrics))
    return out


def _compare_in_order(
    versions: Sequence[str],
    by_version: Mapping[str, Sequence[tuple[JoinedRow, float]]],
    metric: Metric | None,
    confidence: float,
    tolerance: float,
    min_labels: int,
) -> list[Regression]:
    if metric is None:
        return []
    judged = [v for v in versions if len(by_version.get(v, ())) >= min_labels]
    out = []
    for baseline, candidate in itertools.pairwise(judged):
        result = compare(metric, _arrays(by_version[baseline]), _arrays(by_version[candidate]),
                         confidence=confidence, tolerance=tolerance)  # fmt: skip
        out.append(Regression(baseline, candidate, result))
    return out


def compare_versions(
    engine: Engine,
    endpoint: str,
    baseline: str,
    candidate: str,
    *,
    metric: Metric,
    score: str | None = None,
    answered_since: float | None = None,
    confidence: float = 0.95,
    tolerance: float = 0.0,
) -> Comparison:
    """``candidate`` against ``baseline`` on the labels of rows answered since
    ``answered_since``: the ``outcome`` gate's evidence. A classifier's metric reads only
    labels in :data:`CLASSES`, as the report does."""
    rows = OutcomeStore(engine).joined(
        endpoint, versions=[baseline, candidate], answered_since=answered_since
    )
    arms: dict[str, list[tuple[JoinedRow, float]]] = {baseline: [], candidate: []}
    classes = metric in CLASSIFIER_METRICS
    for row in rows:
        value = score_of(row.outputs, score)
        if value is not None and (not classes or row.value in CLASSES):
            arms[row.model_version].append((row, value))
    return compare(metric, _arrays(arms[baseline]), _arrays(arms[candidate]),
                   confidence=confidence, tolerance=tolerance)  # fmt: skip


def outcome_events(engine: Engine, endpoints: Iterable[str] | None = None) -> list[dict[str, str]]:
    """Every endpoint's outcome alerts (regressions, parted estimates), for ``status``."""
    names = list(endpoints) if endpoints is not None else OutcomeStore(engine).endpoints()
    events = []
    for name in names:
        for line in outcomes_by_version(engine, name).alerts:
            events.append({"endpoint": name, "message": line})
    return events
