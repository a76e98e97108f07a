"""Jobs' runs in the store, on SQLite and PostgreSQL: what the controller writes and reads
back after a restart, and the audited user actions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from modelplane.errors import Conflict, NotFound
from modelplane.store import audit
from modelplane.store.audit import AuditKey, bind_key
from modelplane.store.db import open_engine, read_session
from modelplane.store.jobs import JobState, JobStore, NewShard, ShardState, job_document


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    bind_key(engine, AuditKey(b"k" * 32))
    yield engine
    engine.dispose()


def planned(store: JobStore, name: str = "score", shards: int = 3) -> None:
    store.create(
        name=name, uid=f"uid-{name}", generation=1, team="risk", tier="batch",
        work_type="batch-score", submitted_at=10.0, now=10.0,
    )  # fmt: skip
    plan = [NewShard(i, i * 100, (i + 1) * 100) for i in range(shards)]
    store.planned(
        name, plan, rows_total=shards * 100, model_ref="fraud:1", model_digest="sha256:ab",
        output_url="/out", now=11.0,
    )  # fmt: skip


def test_a_run_is_created_once_and_planned_into_pending_shards(engine: Engine) -> None:
    store = JobStore(engine)
    planned(store)
    again = store.create(
        name="score", uid="other", generation=2, team="x", tier="batch", work_type="batch-score",
        submitted_at=99.0, now=99.0,
    )  # fmt: skip
    assert (again.uid, again.state, again.shards_total) == ("uid-score", JobState.QUEUED, 3)
    shards = store.shards(["score"])["score"]
    assert [(s.index, s.state, s.row_start, s.row_stop) for s in shards] == [
        (0, ShardState.PENDING, 0, 100),
        (1, ShardState.PENDING, 100, 200),
        (2, ShardState.PENDING, 200, 300),
    ]
    assert store.events("score")[0].message == "submitted"


def test_attempts_failures_and_usage_add_up(engine: Engine) -> None:
    store = JobStore(engine)
    planned(store)
    assert store.shard_started("score", 0, borrowed=True, now=20.0, admitted=True) == 1
    with pytest.raises(Conflict, match="not pending"):
        store.shard_started("score", 0, borrowed=False, now=20.0, admitted=True)
    usage = {"wall_seconds": 2.0, "cpu_seconds": 1.5, "gpu_seconds": 0.0, "peak_memory_mib": 300}
    store.shard_ended(
        "score", 0, state=ShardState.PENDING, now=22.0, error="boom", failed=True,
        not_before=30.0, usage=usage, message="failed",
    )  # fmt: skip
    assert store.shard_started("score", 0, borrowed=False, now=31.0, admitted=True) == 2
    done = store.shard_ended(
        "score", 0, state=ShardState.DONE, now=33.0, rows=100, usage=usage, message="done"
    )
    assert done is not None
    assert (done.attempts, done.failures, done.rows, done.last_error) == (2, 1, 100, "boom")
    assert (done.wall_seconds, done.cpu_seconds, done.peak_memory_mib) == (4.0, 3.0, 300)
    record = store.get("score")
    assert (record.state, record.admitted_at) == (JobState.RUNNING, 20.0)
    document = job_document(record, store.shards(["score"])["score"], now=40.0, detail=True)
    assert document["queue_wait_s"] == 10.0
    assert document["shards"]["done"] == 1
    assert document["rows"] == {"done": 100, "total": 300}
    assert document["rows_per_s"] == pytest.approx(100 / 20.0)
    assert document["eta_s"] == pytest.approx(200 / 5.0)


def test_shards_left_running_by_a_dead_controller_are_pending_again(engine: Engine) -> None:
    store = JobStore(engine)
    planned(store)
    store.shard_started("score", 1, borrowed=False, now=20.0, admitted=True)
    assert store.requeue_shards("score", now=25.0, message="restart") == 1
    states = [s.state for s in store.shards(["score"])["score"]]
    assert states == [ShardState.PENDING] * 3


def test_cancel_and_retry_are_audited_and_keep_finished_shards(engine: Engine) -> None:
    store = JobStore(engine)
    planned(store)
    store.shard_started("score", 0, borrowed=False, now=20.0, admitted=True)
    store.shard_ended("score", 0, state=ShardState.DONE, now=21.0, rows=100, message="done")
    store.shard_started("score", 1, borrowed=False, now=21.0, admitted=True)
    store.shard_ended(
        "score", 1, state=ShardState.FAILED, now=22.0, error="bad", failed=True, message="x"
    )
    cancelled = store.cancel("score", actor="alice", reason="wrong day", now=23.0)
    assert (cancelled.state, cancelled.reason) == (
        JobState.CANCELLED,
        "cancelled by alice: wrong day",
    )
    with pytest.raises(Conflict, match="already cancelled"):
        store.cancel("score", actor="alice", reason="", now=24.0)
    retried = store.retry("score", actor="bob", reason="fixed", now=25.0)
    assert (retried.state, retried.finished_at) == (JobState.QUEUED, None)
    states = [(s.state, s.failures) for s in store.shards(["score"])["score"]]
    assert states == [(ShardState.DONE, 0), (ShardState.PENDING, 0), (ShardState.PENDING, 0)]
    with pytest.raises(Conflict, match="only a failed or cancelled job"):
        store.retry("score", actor="bob", reason="", now=26.0)
    with read_session(engine) as session:
        events = audit.list_events(session, subject="Job/score")
    assert [(e.action, e.actor) for e in events] == [("job.retry", "bob"), ("job.cancel", "alice")]
    with pytest.raises(NotFound, match="job 'ghost' not found"):
        store.cancel("ghost", actor="alice", reason="", now=0.0)


def test_forget_removes_the_run_its_shards_and_log(engine: Engine) -> None:
    store = JobStore(engine)
    planned(store)
    store.forget("score")
    assert store.find("score") is None
    assert store.shards(["score"]) == {"score": []}
    assert store.events("score") == []
