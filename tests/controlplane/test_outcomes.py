"""The outcome recorder: a regression found in late labels becomes an ``OutcomeReport``
that ``status`` shows, and one audit event, however many passes see it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import Engine

from modelplane.cli.status_text import status_lines
from modelplane.controlplane.outcomes import KIND, OutcomeRecorder
from modelplane.observe.outcomes import Feedback, OutcomeStore
from modelplane.observe.predlog import write_requests
from modelplane.observe.records import LatencySplit, PredictionRecord
from modelplane.observe.status import endpoint_status
from modelplane.store import audit
from modelplane.store.db import open_engine, read_session
from modelplane.store.resources import ResourceStore
from modelplane.types import FakeClock


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    audit.bind_key(engine, audit.AuditKey(b"k" * 32))
    yield engine
    engine.dispose()


def answered_and_labelled(engine: Engine, n: int = 600) -> None:
    """fraud:1 ranks well; fraud:2, answering after it, ranks backwards."""
    rng = np.random.default_rng(1)
    truth = rng.random(n) < 0.5
    records, feedback = [], []
    for i in range(n):
        version = "fraud:1" if i < n // 2 else "fraud:2"
        good = 0.8 if truth[i] else 0.2
        p = good if version == "fraud:1" else 1 - good
        p = float(np.clip(p + rng.normal(0, 0.1), 0.01, 0.99))
        records.append(PredictionRecord(
            f"r{i}", 1_790_000_000.0 + i, "fraud-score", "fraud", 1, 200,
            LatencySplit(0, 0, 0, 0), model_version=version,
            outputs={"probabilities": np.array([[1 - p, p]])},
        ))  # fmt: skip
        feedback.append(Feedback(f"r{i}", float(truth[i])))
    write_requests(engine, records)
    OutcomeStore(engine).ingest("fraud-score", feedback)


def test_a_regression_is_reported_and_recorded_once(engine: Engine) -> None:
    answered_and_labelled(engine)
    recorder = OutcomeRecorder(engine, clock=FakeClock(start=1_800_000_000.0))
    [document] = recorder.record_now().values()
    keys = {e["key"] for e in document["events"]}
    assert "regression:fraud:1->fraud:2" in keys
    # scores of 0.8 that are right nearly always are not calibrated: CBPE says so too
    assert "parted:fraud:1" in keys
    assert document["metric"] == "auc"
    assert [v["version"] for v in document["versions"]] == ["fraud:1", "fraud:2"]
    recorder.record_now()  # the same regression again: no second event
    with read_session(engine) as session:
        events = audit.list_events(session, action="outcome.regression")
    assert len(events) == 1
    assert events[0].subject == "Endpoint/fraud-score"
    assert "fraud:2 is worse than fraud:1 on auc" in events[0].reason

    stored = ResourceStore(engine).get(KIND, "fraud-score").status
    shown = endpoint_status("fraud-score", 1, {"team": "risk", "contract": {"name": "fraud"}},
                            None, {}, outcomes=stored)  # fmt: skip
    assert shown["outcomes"]["alerts"] == document["alerts"]
    lines = list(status_lines([shown]))
    assert any(line.startswith("  OUTCOME ALERT fraud:2 is worse than fraud:1 on auc")
               for line in lines), lines  # fmt: skip


def test_no_outcomes_no_report(engine: Engine) -> None:
    assert OutcomeRecorder(engine).record_now() == {}


def test_an_endpoint_is_reported_again_only_when_outcomes_arrived(engine: Engine) -> None:
    answered_and_labelled(engine, 100)
    clock = FakeClock(start=1_800_000_000.0)
    recorder = OutcomeRecorder(engine, clock=clock, refresh_s=300.0)
    assert set(recorder.record_now()) == {"fraud-score"}
    clock.advance(10.0)
    assert recorder.record_now() == {}
    OutcomeStore(engine).ingest("fraud-score", [Feedback("r1", 0.0)], now=clock.wall())
    assert set(recorder.record_now()) == {"fraud-score"}
    clock.advance(301.0)
    assert set(recorder.record_now()) == {"fraud-score"}


def test_labels_left_out_show_in_status(engine: Engine) -> None:
    answered_and_labelled(engine)
    OutcomeStore(engine).ingest("fraud-score", [Feedback("r0", 5.0), Feedback("r1", 5.0)])
    recorder = OutcomeRecorder(engine, clock=FakeClock(start=1_800_000_000.0))
    [document] = recorder.record_now().values()
    assert document["task"] == "classifier"
    assert document["notes"], document
    stored = ResourceStore(engine).get(KIND, "fraud-score").status
    shown = endpoint_status("fraud-score", 1, {"team": "risk", "contract": {"name": "fraud"}},
                            None, {}, outcomes=stored)  # fmt: skip
    lines = list(status_lines([shown]))
    assert any(line.startswith("  OUTCOME NOTE 2 labels outside the classes") for line in lines), (
        lines
    )
