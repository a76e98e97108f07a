"""Jobs' runs in the state store: each job, its shards and its log, written by the controller.

The ``Job`` resource (what was asked) is versioned and audited by ``apply``; what happens
to it lives here, so that a control plane that died resumes from its finished shards.
User actions on a run (cancel, retry) are audited; the controller's own progress is
observation and is not. Times are wall-clock Unix seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, delete, select, update

from modelplane.errors import Conflict, NotFound
from modelplane.store import audit
from modelplane.store.db import read_session, write_session
from modelplane.store.schema import JobEventRow, JobRow, JobShardRow

__all__ = [
    "ACTIVE_STATES",
    "FINISHED_STATES",
    "JobEvent",
    "JobRecord",
    "JobState",
    "JobStore",
    "NewShard",
    "ShardRecord",
    "ShardState",
    "job_document",
]

_EVENTS_KEPT_PER_JOB = 2000


class JobState(StrEnum):
    """Where a job's run stands."""

    PENDING = "pending"
    """Submitted; its inputs are not checked and its shards not planned yet."""
    QUEUED = "queued"
    """Planned, waiting for admission; nothing of it has run."""
    RUNNING = "running"
    """Admitted: shards run or wait for room; finished shards stay finished."""
    SUCCEEDED = "succeeded"
    """Every shard is done and the output is marked finished."""
    FAILED = "failed"
    """A check failed, a shard failed past its retry limit, or the deadline passed."""
    CANCELLED = "cancelled"
    """Cancelled by someone; finished shards stay, running ones were stopped."""


ACTIVE_STATES = frozenset({JobState.PENDING, JobState.QUEUED, JobState.RUNNING})
FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class ShardState(StrEnum):
    PENDING = "pending"
    """Not started, or to be started again (after a preemption, a failure or a restart)."""
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    """Failed past the retry limit: the job failed with its error."""


@dataclass(frozen=True, slots=True)
class JobRecord:
    name: str
    uid: str
    generation: int
    team: str
    tier: str
    work_type: str
    state: JobState
    reason: str
    model_ref: str | None
    model_digest: str | None
    output_url: str | None
    submitted_at: float
    admitted_at: float | None
    finished_at: float | None
    shards_total: int
    rows_total: int | None
    updated_at: float

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


@dataclass(frozen=True, slots=True)
class ShardRecord:
    job: str
    index: int
    row_start: int
    row_stop: int
    row_groups: tuple[int, ...]
    state: ShardState
    attempts: int
    failures: int
    last_error: str | None
    rows: int | None
    borrowed: bool
    not_before: float | None
    started_at: float | None
    finished_at: float | None
    wall_seconds: float
    cpu_seconds: float
    gpu_seconds: float
    peak_memory_mib: float


@dataclass(frozen=True, slots=True)
class JobEvent:
    id: int
    job: str
    at: float
    shard: int | None
    message: str


@dataclass(frozen=True, slots=True)
class NewShard:
    index: int
    row_start: int
    row_stop: int
    row_groups: tuple[int, ...] = ()


def _job(row: JobRow) -> JobRecord:
    return JobRecord(
        row.name, row.uid, row.generation, row.team, row.tier, row.work_type,
        JobState(row.state), row.reason, row.model_ref, row.model_digest, row.output_url,
        row.submitted_at, row.admitted_at, row.finished_at, row.shards_total, row.rows_total,
        row.updated_at,
    )  # fmt: skip


def _shard(row: JobShardRow) -> ShardRecord:
    return ShardRecord(
        row.job, row.shard, row.row_start, row.row_stop, tuple(row.row_groups or ()),
        ShardState(row.state), row.attempts, row.failures, row.last_error, row.rows,
        row.borrowed, row.not_before, row.started_at, row.finished_at, row.wall_seconds,
        row.cpu_seconds, row.gpu_seconds, row.peak_memory_mib,
    )  # fmt: skip


class JobStore:
    """Jobs' runs over the state store's engine (its audit key bound for user actions)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- reads ------------------------------------------------------------------------

    def get(self, name: str) -> JobRecord:
        with read_session(self.engine) as session:
            row = session.get(JobRow, name)
            if row is None:
                raise NotFound(f"job '{name}' not found")
            return _job(row)

    def find(self, name: str) -> JobRecord | None:
        with read_session(self.engine) as session:
            row = session.get(JobRow, name)
            return None if row is None else _job(row)

    def list_jobs(
        self, *, states: Iterable[JobState] | None = None, team: str | None = None
    ) -> list[JobRecord]:
        query = select(JobRow).order_by(JobRow.submitted_at, JobRow.name)
        if states is not None:
            query = query.where(JobRow.state.in_([s.value for s in states]))
        if team is not None:
            query = query.where(JobRow.team == team)
        with read_session(self.engine) as session:
            return [_job(row) for row in session.scalars(query)]

    def shards(self, names: Sequence[str]) -> dict[str, list[ShardRecord]]:
        """Every shard of each named job, by job, in index order."""
        out: dict[str, list[ShardRecord]] = {name: [] for name in names}
        if not names:
            return out
        query = select(JobShardRow).order_by(JobShardRow.job, JobShardRow.shard)
        if len(names) < 500:
            query = query.where(JobShardRow.job.in_(list(names)))
        with read_session(self.engine) as session:
            for row in session.scalars(query):
                if row.job in out:
                    out[row.job].append(_shard(row))
        return out

    def events(self, name: str, *, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        query = (
            select(JobEventRow)
            .where(JobEventRow.job == name, JobEventRow.id > after)
            .order_by(JobEventRow.id)
            .limit(limit)
        )
        with read_session(self.engine) as session:
            return [JobEvent(r.id, r.job, r.at, r.shard, r.message) for r in session.scalars(query)]

    # -- the controller's writes ---------------------------------------------------------

    def create(
        self,
        *,
        name: str,
        uid: str,
        generation: int,
        team: str,
        tier: str,
        work_type: str,
        submitted_at: float,
        now: float,
    ) -> JobRecord:
        """The run of a newly seen job; the existing one when it is already there."""
        with write_session(self.engine) as session:
            row = session.get(JobRow, name)
            if row is None:
                row = JobRow(
                    name=name, uid=uid, generation=generation, team=team, tier=tier,
                    work_type=work_type, state=JobState.PENDING.value, reason="submitted",
                    submitted_at=submitted_at, shards_total=0, updated_at=now,
                )  # fmt: skip
                session.add(row)
                session.add(JobEventRow(job=name, at=now, shard=None, message="submitted"))
                session.flush()
            return _job(row)

    def planned(
        self,
        name: str,
        shards: Sequence[NewShard],
        *,
        rows_total: int | None,
        model_ref: str | None,
        model_digest: str | None,
        output_url: str | None,
        now: float,
    ) -> None:
        """Record the plan: the job is queued with its shards, all pending."""
        with write_session(self.engine) as session:
            row = session.get(JobRow, name, with_for_update=True)
            if row is None or row.state != JobState.PENDING.value:
                return  # cancelled (or deleted) while it was being planned
            session.execute(delete(JobShardRow).where(JobShardRow.job == name))
            for shard in shards:
                session.add(
                    JobShardRow(
                        job=name, shard=shard.index, row_start=shard.row_start,
                        row_stop=shard.row_stop, row_groups=list(shard.row_groups) or None,
                        state=ShardState.PENDING.value, attempts=0, failures=0,
                        borrowed=False, wall_seconds=0.0, cpu_seconds=0.0, gpu_seconds=0.0,
                        peak_memory_mib=0.0,
                    )
                )  # fmt: skip
            row.state, row.reason = JobState.QUEUED.value, "queued"
            row.shards_total, row.rows_total = len(shards), rows_total
            row.model_ref, row.model_digest, row.output_url = model_ref, model_digest, output_url
            row.updated_at = now
            message = f"planned {len(shards)} shard(s)" + (
                f" over {rows_total} rows" if rows_total is not None else ""
            )
            if model_ref:
                message += f"; model pinned to {model_ref} ({model_digest})"
            session.add(JobEventRow(job=name, at=now, shard=None, message=message))

    def set_state(
        self,
        name: str,
        state: JobState,
        reason: str,
        *,
        now: float,
        event: bool = True,
        only_from: Iterable[JobState] | None = None,
    ) -> bool:
        """Move the job to ``state``; False (and no change) when it is not in ``only_from``."""
        with write_session(self.engine) as session:
            row = session.get(JobRow, name, with_for_update=True)
            if row is None:
                return False
            if only_from is not None and row.state not in {s.value for s in only_from}:
                return False
            if row.state == state.value and row.reason == reason:
                return True
            row.state, row.reason, row.updated_at = state.value, reason, now
            if state in FINISHED_STATES and row.finished_at is None:
                row.finished_at = now
            if event:
                session.add(JobEventRow(job=name, at=now, shard=None, message=reason))
            return True

    def set_reason(self, name: str, reason: str, *, now: float) -> None:
        """Say why an active job waits (not logged: it may change on every pass)."""
        with write_session(self.engine) as session:
            row = session.get(JobRow, name, with_for_update=True)
            if row is not None and row.reason != reason and row.state != JobState.PENDING:
                row.reason, row.updated_at = reason, now

    def shard_started(
        self, name: str, index: int, *, borrowed: bool, now: float, admitted: bool
    ) -> int:
        """Mark a shard running; returns the new attempt number."""
        with write_session(self.engine) as session:
            row = session.get(JobShardRow, (name, index), with_for_update=True)
            job = session.get(JobRow, name, with_for_update=True)
            if row is None or job is None:
                raise NotFound(f"shard {index} of job '{name}' not found")
            if row.state != ShardState.PENDING.value or job.state in FINISHED_STATES:
                raise Conflict(f"shard {index} of job '{name}' is {row.state}, not pending")
            row.state, row.attempts, row.borrowed = (
                ShardState.RUNNING.value,
                row.attempts + 1,
                borrowed,
            )
            row.started_at, row.not_before = now, None
            if admitted and job.admitted_at is None:
                job.admitted_at = now
            if job.state != JobState.RUNNING.value:
                job.state = JobState.RUNNING.value
            job.updated_at = now
            how = " on borrowed quota" if borrowed else ""
            session.add(
                JobEventRow(job=name, at=now, shard=index,
                            message=f"shard {index} attempt {row.attempts} started{how}")
            )  # fmt: skip
            return row.attempts

    def shard_ended(
        self,
        name: str,
        index: int,
        *,
        state: ShardState,
        now: float,
        message: str,
        rows: int | None = None,
        error: str | None = None,
        failed: bool = False,
        not_before: float | None = None,
        usage: dict[str, float] | None = None,
    ) -> ShardRecord | None:
        """One attempt ended: the shard's new state, and what the attempt used (added)."""
        with write_session(self.engine) as session:
            row = session.get(JobShardRow, (name, index), with_for_update=True)
            if row is None:
                return None
            row.state = state.value
            if rows is not None:
                row.rows = rows
            if error is not None:
                row.last_error = error
            if failed:
                row.failures += 1
            row.not_before = not_before
            if state is ShardState.DONE:
                row.finished_at = now
            for key, value in (usage or {}).items():
                if key == "peak_memory_mib":
                    row.peak_memory_mib = max(row.peak_memory_mib, value)
                else:
                    setattr(row, key, getattr(row, key) + value)
            session.add(JobEventRow(job=name, at=now, shard=index, message=message))
            session.flush()
            return _shard(row)

    def requeue_shards(self, name: str, *, now: float, message: str) -> int:
        """Shards marked running that nothing runs (a restart): pending again."""
        with write_session(self.engine) as session:
            done = session.execute(
                update(JobShardRow)
                .where(JobShardRow.job == name, JobShardRow.state == ShardState.RUNNING.value)
                .values(state=ShardState.PENDING.value)
            )
            count = int(getattr(done, "rowcount", 0) or 0)
            if count:
                session.add(JobEventRow(job=name, at=now, shard=None, message=message))
            return count

    def log(self, name: str, message: str, *, now: float, shard: int | None = None) -> None:
        with write_session(self.engine) as session:
            session.add(JobEventRow(job=name, at=now, shard=shard, message=message))

    def trim_events(self, name: str) -> None:
        """Keep the newest events of a job: its log stays bounded however often it retries."""
        with write_session(self.engine) as session:
            ids = session.scalars(
                select(JobEventRow.id)
                .where(JobEventRow.job == name)
                .order_by(JobEventRow.id.desc())
                .offset(_EVENTS_KEPT_PER_JOB)
                .limit(1)
            ).all()
            if ids:
                session.execute(
                    delete(JobEventRow).where(JobEventRow.job == name, JobEventRow.id <= ids[0])
                )

    # -- user actions (audited) ----------------------------------------------------------

    def cancel(self, name: str, *, actor: str, reason: str, now: float) -> JobRecord:
        """Cancel an active job; its running shards are stopped by the controller."""
        with write_session(self.engine) as session:
            row = session.get(JobRow, name, with_for_update=True)
            if row is None:
                raise NotFound(f"job '{name}' not found")
            if row.state in FINISHED_STATES:
                raise Conflict(f"job '{name}' is already {row.state}; nothing to cancel")
            before = {"state": row.state}
            row.state, row.updated_at, row.finished_at = JobState.CANCELLED.value, now, now
            row.reason = f"cancelled by {actor}" + (f": {reason}" if reason else "")
            session.add(JobEventRow(job=name, at=now, shard=None, message=row.reason))
            _audit(session, actor, "job.cancel", name, reason, before, {"state": row.state}, now)
            session.flush()
            return _job(row)

    def retry(self, name: str, *, actor: str, reason: str, now: float) -> JobRecord:
        """Run a failed or cancelled job again from its finished shards."""
        with write_session(self.engine) as session:
            row = session.get(JobRow, name, with_for_update=True)
            if row is None:
                raise NotFound(f"job '{name}' not found")
            if row.state not in {JobState.FAILED.value, JobState.CANCELLED.value}:
                raise Conflict(
                    f"job '{name}' is {row.state}; only a failed or cancelled job is retried"
                )
            before = {"state": row.state, "reason": row.reason}
            planned = row.shards_total > 0
            row.state = (JobState.QUEUED if planned else JobState.PENDING).value
            row.reason, row.finished_at, row.updated_at = f"retried by {actor}", None, now
            session.execute(
                update(JobShardRow)
                .where(JobShardRow.job == name, JobShardRow.state != ShardState.DONE.value)
                .values(state=ShardState.PENDING.value, failures=0, not_before=None)
            )
            session.add(JobEventRow(job=name, at=now, shard=None, message=row.reason))
            _audit(session, actor, "job.retry", name, reason, before, {"state": row.state}, now)
            session.flush()
            return _job(row)

    def forget(self, name: str) -> None:
        """Drop a job's run, shards and log (its resource was deleted)."""
        with write_session(self.engine) as session:
            session.execute(delete(JobShardRow).where(JobShardRow.job == name))
            session.execute(delete(JobEventRow).where(JobEventRow.job == name))
            session.execute(delete(JobRow).where(JobRow.name == name))


def _audit(
    session: Any,
    actor: str,
    action: str,
    name: str,
    reason: str,
    before: dict[str, Any],
    after: dict[str, Any],
    now: float,
) -> None:
    at = datetime.fromtimestamp(now, UTC)
    audit.append(
        session,
        audit.AuditEvent(
            actor=actor, action=action, subject=f"Job/{name}", at=at, reason=reason,
            before=before, after=after,
        ),
    )  # fmt: skip


def job_document(
    record: JobRecord, shards: Sequence[ShardRecord], *, now: float, detail: bool = False
) -> dict[str, Any]:
    """A job's run as plain data (the API's answer, ``jobs list|show --json``): state,
    reason, progress (shards, rows, rows/s, ETA), queue wait and resource-seconds."""
    done = [s for s in shards if s.state is ShardState.DONE]
    rows_done = sum(s.rows or 0 for s in done)
    end = record.finished_at if record.finished_at is not None else now
    elapsed = end - record.admitted_at if record.admitted_at is not None else 0.0
    rate = rows_done / elapsed if elapsed > 0 else 0.0
    left = (record.rows_total or 0) - rows_done
    eta = left / rate if rate > 0 and left > 0 and not record.finished else None
    waited = (record.admitted_at if record.admitted_at is not None else end) - record.submitted_at
    counts = {state.value: 0 for state in ShardState}
    for shard in shards:
        counts[shard.state.value] += 1
    out: dict[str, Any] = {
        "name": record.name,
        "uid": record.uid,
        "team": record.team,
        "tier": record.tier,
        "type": record.work_type,
        "state": record.state.value,
        "reason": record.reason,
        "model": record.model_ref,
        "digest": record.model_digest,
        "output": record.output_url,
        "submitted_at": record.submitted_at,
        "admitted_at": record.admitted_at,
        "finished_at": record.finished_at,
        "queue_wait_s": max(0.0, waited),
        "shards": {"total": record.shards_total, **counts},
        "rows": {"done": rows_done, "total": record.rows_total},
        "rows_per_s": rate,
        "eta_s": eta,
        "used": {
            "wall_seconds": sum(s.wall_seconds for s in shards),
            "cpu_seconds": sum(s.cpu_seconds for s in shards),
            "gpu_seconds": sum(s.gpu_seconds for s in shards),
            "peak_memory_mib": max((s.peak_memory_mib for s in shards), default=0.0),
        },
    }
    if detail:
        out["shard_list"] = [
            {
                "index": s.index,
                "state": s.state.value,
                "rows": s.rows,
                "row_start": s.row_start,
                "row_stop": s.row_stop,
                "attempts": s.attempts,
                "failures": s.failures,
                "borrowed": s.borrowed,
                "last_error": s.last_error,
                "wall_seconds": s.wall_seconds,
                "cpu_seconds": s.cpu_seconds,
            }
            for s in shards
        ]
    return out
