"""The outcome report: business outcomes, regressors, the score an answer is judged by."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Engine
from tests.observe.test_outcomes import T0, answer

from modelplane.core.outcomes import Metric
from modelplane.observe.outcome_report import compare_versions, outcomes_by_version, score_of
from modelplane.observe.outcomes import Feedback, OutcomeStore, parse_feedback
from modelplane.observe.predlog import write_requests
from modelplane.observe.records import LatencySplit, PredictionRecord
from modelplane.store.db import open_engine


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def test_business_outcomes_sum_and_mean_per_version(engine: Engine) -> None:
    write_requests(engine, [answer("a", "fraud:1", [0.2]), answer("b", "fraud:1", [0.9]),
                            answer("c", "fraud:2", [0.4, 0.6])])  # fmt: skip
    body = (b'{"outcomes": [{"request_id": "a", "values": {"revenue": 10}},'
            b' {"request_id": "b", "values": {"revenue": 30}, "label": 1},'
            b' {"request_id": "c", "row": 1, "values": {"revenue": 5}}]}')  # fmt: skip
    OutcomeStore(engine).ingest("fraud-score", parse_feedback(body))
    report = outcomes_by_version(engine, "fraud-score").to_dict()
    [v1, v2] = report["versions"]
    assert v1["business"]["revenue"] == {"sum": 40.0, "mean": 20.0, "rows": 2.0}
    assert v2["business"]["revenue"]["sum"] == 5.0
    assert v1["labelled_rows"] == 1
    assert v1["coverage"] == 0.5
    assert v2["answered_rows"] == 2


def test_a_regressor_is_judged_by_mae_and_rmse(engine: Engine) -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(50, 10, size=400)
    records = []
    for i, y in enumerate(truth):
        version = "price:2" if i % 2 else "price:1"
        noise = 1.0 if version == "price:1" else 8.0  # the second version made worse
        records.append(PredictionRecord(
            request_id=f"q{i}", at=T0 + i, endpoint="price", contract="price",
            contract_version=1, status=200, latency=LatencySplit(0, 0, 0, 0),
            model_version=version, outputs={"prediction": np.array([y + rng.normal(0, noise)])},
        ))  # fmt: skip
    write_requests(engine, records)
    OutcomeStore(engine).ingest("price", [Feedback(f"q{i}", float(y)) for i, y in enumerate(truth)])
    report = outcomes_by_version(engine, "price")
    assert report.task == "regressor"
    assert report.metric == "rmse"
    assert set(report.versions[0].metrics) == {"mae", "rmse"}
    [comparison] = report.comparisons
    assert comparison.regressed
    assert "price:2 is worse than price:1 on rmse" in report.alerts[0]


@pytest.mark.parametrize(
    ("outputs", "named", "score"),
    [
        ({"label": 1, "probabilities": [0.3, 0.7]}, None, 0.7),
        ({"label": 1, "score": 0.4}, None, 0.4),
        ({"prediction": [12.5]}, None, 12.5),
        ({"label": 1, "margin": 2.0}, "margin", 2.0),
        ({"text": "yes", "value": 3}, None, 3.0),
        ({"probabilities": [0.2, 0.3, 0.5]}, None, None),
        ({"text": "yes"}, None, None),
        ({"label": 1}, "missing", None),
    ],
)  # fmt: skip
def test_the_score_of_an_answer(outputs: dict[str, object], named: str | None,
                                score: float | None) -> None:  # fmt: skip
    assert score_of(outputs, named) == score


def test_a_task_given_overrides_the_guess_and_a_bad_one_is_refused(engine: Engine) -> None:
    write_requests(engine, [answer("a", "fraud:1", [0.9]), answer("b", "fraud:1", [0.2])])
    OutcomeStore(engine).ingest("fraud-score", [Feedback("a", 1.0), Feedback("b", 0.0)])
    assert outcomes_by_version(engine, "fraud-score").task == "classifier"
    forced = outcomes_by_version(engine, "fraud-score", task="regressor")
    assert forced.metric == "rmse"
    assert forced.versions[0].metrics["mae"] == pytest.approx((0.1 + 0.2) / 2)
    with pytest.raises(ValueError, match="classifier or regressor"):
        outcomes_by_version(engine, "fraud-score", task="ranker")
    assert outcomes_by_version(engine, "nobody").versions == []


def _labelled_classifier(engine: Engine, outputs: str = "probabilities") -> np.ndarray:
    """Two versions of a binary classifier, 200 labelled answers each; their labels."""
    rng = np.random.default_rng(5)
    scores = rng.random(400)
    labels = (rng.random(400) < scores).astype(float)
    records = []
    for i, s in enumerate(scores):
        version = "fraud:2" if i % 2 else "fraud:1"
        record = answer(f"r{i}", version, [float(s)], at=T0 + i)
        if outputs != "probabilities":  # a bare score, no class output beside it
            record = dataclasses.replace(record, outputs={outputs: np.array([s])})
        records.append(record)
    write_requests(engine, records)
    OutcomeStore(engine).ingest("fraud-score", [Feedback(f"r{i}", y) for i, y in enumerate(labels)])
    return labels


@pytest.mark.parametrize("outputs", ["probabilities", "score"])
def test_labels_outside_the_classes_are_left_out_not_a_switch_to_regressor(
    engine: Engine, outputs: str
) -> None:
    """One label=5.0 used to turn a binary classifier's report into a regressor's (MAE,
    RMSE; no AUC, no CBPE)."""
    _labelled_classifier(engine, outputs)
    clean = outcomes_by_version(engine, "fraud-score")
    assert clean.task == "classifier"
    assert clean.notes == []
    stray = [Feedback("r0", 5.0), Feedback("r2", -1.0), Feedback("r1", 0.5)]
    OutcomeStore(engine).ingest("fraud-score", stray)
    report = outcomes_by_version(engine, "fraud-score")
    assert (report.task, report.metric) == ("classifier", "auc")
    assert report.labels_left_out == 3
    assert [v.labels_left_out for v in report.versions] == [2, 1]
    assert report.notes == ["3 labels outside the classes {0,1} left out (fraud:1 2, fraud:2 1)"]
    for before, after in zip(clean.versions, report.versions, strict=True):
        assert after.labelled_rows == before.labelled_rows - after.labels_left_out
        assert set(after.metrics) == {"accuracy", "auc", "log_loss", "estimated_accuracy"}
        assert after.estimate is not None
    as_json = report.to_dict()
    assert as_json["labels_left_out"] == 3
    assert as_json["notes"] == report.notes
    assert as_json["versions"][0]["labels_left_out"] == 2


def test_a_regressor_with_scores_in_zero_one_stays_a_regressor(engine: Engine) -> None:
    """A rate predicted in [0, 1] against rates observed: labels mostly not 0 or 1."""
    rng = np.random.default_rng(8)
    truth = rng.random(100)
    write_requests(engine, [
        PredictionRecord(request_id=f"q{i}", at=T0 + i, endpoint="rate", contract="rate",
                         contract_version=1, status=200, latency=LatencySplit(0, 0, 0, 0),
                         model_version="rate:1", outputs={"prediction": np.array([y])})
        for i, y in enumerate(truth)
    ])  # fmt: skip
    OutcomeStore(engine).ingest("rate", [Feedback(f"q{i}", float(y)) for i, y in enumerate(truth)])
    report = outcomes_by_version(engine, "rate")
    assert (report.task, report.labels_left_out) == ("regressor", 0)
    assert report.versions[0].metrics["mae"] == pytest.approx(0.0)


@pytest.mark.parametrize("metric", [Metric.AUC, Metric.ACCURACY, Metric.LOG_LOSS])
def test_the_outcome_gate_judges_a_classifier_on_its_classes_only(
    engine: Engine, metric: Metric
) -> None:
    _labelled_classifier(engine)
    clean = compare_versions(engine, "fraud-score", "fraud:1", "fraud:2", metric=metric)
    OutcomeStore(engine).ingest("fraud-score", [Feedback("r0", 5.0), Feedback("r1", -3.0)])
    stray = compare_versions(engine, "fraud-score", "fraud:1", "fraud:2", metric=metric)
    assert stray.baseline_rows == clean.baseline_rows - 1
    assert stray.candidate_rows == clean.candidate_rows - 1
    assert stray.regressed == clean.regressed
    report = outcomes_by_version(engine, "fraud-score", metric=metric)
    [comparison] = report.comparisons
    assert comparison.comparison == stray  # the gate and the report read the same rows


def test_the_outcome_gate_judges_a_regressor_on_every_label(engine: Engine) -> None:
    _labelled_classifier(engine)
    OutcomeStore(engine).ingest("fraud-score", [Feedback("r0", 5.0)])
    found = compare_versions(engine, "fraud-score", "fraud:1", "fraud:2", metric=Metric.MAE)
    assert (found.baseline_rows, found.candidate_rows) == (200, 200)
