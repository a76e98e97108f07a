"""The prediction log: the table on both engines, the bounded queue, sampling, retention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select

from modelplane.observe.predlog import (
    PredictionLog,
    PredictionLogConfig,
    find_predictions,
    find_requests,
    trim_predictions,
    trim_requests,
    write_predictions,
    write_requests,
)
from modelplane.observe.records import (
    BatchTiming,
    LatencySplit,
    PredictionRecord,
    RequestTrace,
    split_latency,
)
from modelplane.store.db import open_engine, read_session
from modelplane.store.schema import PredictionRow


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def record(request_id: str, *, at: float = 1_700_000_000.0, **kw: object) -> PredictionRecord:
    fields: dict[str, object] = {
        "endpoint": "fraud-score",
        "contract": "fraud",
        "contract_version": 2,
        "status": 200,
        "latency": LatencySplit(0.1, 0.5, 2.0, 3.0),
        "model_version": "fraud:7",
        "digest": "sha256:" + "a" * 64,
        "route": "fraud@champion",
        "batch_size": 4,
        **kw,
    }
    return PredictionRecord(request_id=request_id, at=at, **fields)  # type: ignore[arg-type]


def count(engine: Engine) -> int:
    with read_session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(PredictionRow)) or 0)


def test_rows_round_trip_on_both_engines(engine: Engine) -> None:
    write_predictions(engine, [record("r1"), record("r2", status=503, error_code="worker_failed")])
    write_predictions(engine, [record("r1", at=1_700_000_001.0, fallback_reason="timeout")])
    found = find_predictions(engine, "r1")
    assert [row["fallback_reason"] for row in found] == ["timeout", None]  # newest first
    assert found[1]["at"].timestamp() == 1_700_000_000.0
    assert found[1]["digest"] == "sha256:" + "a" * 64
    assert found[1]["compute_ms"] == 2.0
    assert find_predictions(engine, "r2")[0]["error_code"] == "worker_failed"
    assert find_predictions(engine, "missing") == []


def test_trim_keeps_the_newest_rows(engine: Engine) -> None:
    write_predictions(engine, [record(f"r{i}") for i in range(25)])
    assert trim_predictions(engine, 10) == 15
    assert count(engine) == 10
    assert find_predictions(engine, "r24")
    assert not find_predictions(engine, "r14")
    assert trim_predictions(engine, 10) == 0


def test_a_full_queue_drops_and_counts(sqlite_url: str) -> None:
    engine = open_engine(sqlite_url)
    sink = PredictionLog(engine, PredictionLogConfig(capacity=3, batch_size=2, retain_rows=100))
    for i in range(5):
        sink.offer(record(f"r{i}"))
    assert (sink.pending, sink.dropped) == (3, 2)
    assert asyncio.run(sink.flush()) == 3
    assert (sink.pending, sink.written, count(engine)) == (0, 3, 3)
    assert [find_predictions(engine, f"r{i}") != [] for i in range(5)] == [True] * 3 + [False] * 2
    engine.dispose()


def test_the_flusher_writes_in_the_background_and_trims(sqlite_url: str) -> None:
    engine = open_engine(sqlite_url)
    config = PredictionLogConfig(flush_interval_s=0.01, retain_rows=10)
    sink = PredictionLog(engine, config)

    async def run() -> None:
        await sink.start()
        for i in range(30):
            sink.offer(record(f"r{i}"))
        for _ in range(200):
            if sink.written == 30:
                break
            await asyncio.sleep(0.01)
        await sink.stop()

    asyncio.run(run())
    assert sink.written == 30
    assert count(engine) == 10
    engine.dispose()


def test_brief_records_go_to_the_request_log_not_the_prediction_log(engine: Engine) -> None:
    sink = PredictionLog(engine, PredictionLogConfig(batch_size=2))
    now = time.time()  # older than the retention would be trimmed at once
    for i in range(3):
        sink.offer(record(f"plain-{i}", at=now, brief=True))
    sink.offer(record("kept", fallback_reason="timeout"))
    assert sink.pending == 4
    assert asyncio.run(sink.flush()) == 4
    assert count(engine) == 1  # sampled evidence is not pushed out by plain traffic
    [brief] = find_requests(engine, "plain-1")
    assert brief["brief"] is True
    assert (brief["model_version"], brief["route"], brief["total_ms"]) == (
        "fraud:7", "fraud@champion", 3.0
    )  # fmt: skip
    assert (brief["error_code"], brief["fallback_reason"], brief["features"]) == (None,) * 3
    assert brief["at"].timestamp() == pytest.approx(now)
    assert find_requests(engine, "kept") == []


def test_the_request_log_keeps_a_bounded_time(engine: Engine) -> None:
    now = time.time()
    write_requests(engine, [record("old", at=now - 7200, brief=True),
                            record("young", at=now - 60, brief=True)])  # fmt: skip
    assert trim_requests(engine, now - 3600) == 1
    assert (find_requests(engine, "old"), len(find_requests(engine, "young"))) == ([], 1)
    # the sink trims on its first flush, then once per tenth of the retention
    sink = PredictionLog(engine, PredictionLogConfig(request_retain_s=30))
    sink.offer(record("new", at=now, brief=True))
    asyncio.run(sink.flush())
    assert (find_requests(engine, "young"), len(find_requests(engine, "new"))) == ([], 1)


def test_a_full_brief_queue_drops_and_counts_and_can_be_off() -> None:
    sink = PredictionLog(None, PredictionLogConfig(request_capacity=2))  # type: ignore[arg-type]
    for i in range(3):
        sink.offer(record(f"r{i}", brief=True))
    assert (sink.pending, sink.dropped_brief, sink.dropped) == (2, 1, 0)
    off = PredictionLog(None, PredictionLogConfig(keep_every_request=False))  # type: ignore[arg-type]
    off.offer(record("r", brief=True))
    assert (off.pending, off.dropped_brief) == (0, 0)


def test_sampling_rate_bounds() -> None:
    never = PredictionLog(None, PredictionLogConfig(sample_rate=0.0), seed=1)  # type: ignore[arg-type]
    always = PredictionLog(None, PredictionLogConfig(sample_rate=1.0), seed=1)  # type: ignore[arg-type]
    some = PredictionLog(None, PredictionLogConfig(sample_rate=0.1), seed=1)  # type: ignore[arg-type]
    assert not any(never.sampled() for _ in range(1000))
    assert all(always.sampled() for _ in range(1000))
    assert 50 < sum(some.sampled() for _ in range(1000)) < 150
    with pytest.raises(ValueError, match="sample_rate"):
        PredictionLogConfig(sample_rate=1.5)


def test_latency_split_parts_add_up_to_at_most_the_total() -> None:
    trace = RequestTrace(started_at=10.0, enqueued_at=10.001)
    trace.batch = BatchTiming(10.003, rows=8)
    trace.batch.returned_at = 10.010
    split = split_latency(trace, 10.012)
    assert split.queue_ms == pytest.approx(1.0)
    assert split.batch_ms == pytest.approx(2.0)
    assert split.compute_ms == pytest.approx(7.0)
    assert split.total_ms == pytest.approx(12.0)
    # a deadline answered before the batch came back: the worker's time so far
    late = RequestTrace(started_at=10.0, enqueued_at=10.001, batch=BatchTiming(10.002, 1))
    assert split_latency(late, 10.005).compute_ms == pytest.approx(3.0)
    # never reached the batcher (a rejected input)
    assert split_latency(RequestTrace(started_at=10.0), 10.004).queue_ms == pytest.approx(4.0)
