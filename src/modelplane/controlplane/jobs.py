"""The job controller: runs ``Job`` resources through the queue, shard by shard.

Each pass (level-triggered over the store, so a restarted controller resumes):

1. **Runs**: a ``Job`` resource without a run gets one (a uid, its submit time); a run
   whose resource was deleted is stopped and forgotten.
2. **Plan**: a new run is checked and planned by the injected :class:`JobPlanner` (model
   pinned, dataset and columns checked against the model's signature, output location);
   a failed check fails the job with the error, before any shard runs.
3. **Outcomes** from the injected :class:`ShardExecutor`: a finished shard stays finished;
   a failed one is retried after ``backoff_s * 2**(n-1)`` up to ``retries.limit``, then the
   job fails with that shard's error; a preempted one is simply ready again. Each attempt's
   usage is recorded (``observe.usage``). Shards the store says run but the executor does
   not know (the control plane died) are ready again: their finished outputs are found by
   the next attempt, which writes nothing twice.
4. **Ends**: cancelled and failed jobs have their attempts stopped; a job past its deadline
   fails; a job whose shards are all done is marked finished.
5. **Queue**: one :func:`core.jobqueue.decide` over every active job, with serving's
   replicas (their capacity comes first), the node capacity, the policy and the
   degradation steps in force; its stops are carried out (a preemption, retried without
   counting) and its starts too.
6. **Status**: each job's ``status`` (typed conditions, one-line reason) when it changed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from modelplane.controlplane.degrader import Degrader
from modelplane.controlplane.loop import every
from modelplane.controlplane.why import applied_policy, endpoint_workloads
from modelplane.core.cluster import GPU_MILLI, Demand
from modelplane.core.degrade import Effects, effects
from modelplane.core.jobplan import JobPlanner, PlannedJob
from modelplane.core.jobqueue import (
    QueuedJob,
    QueueSnapshot,
    QueueState,
    RunningShard,
    Stop,
    decide,
)
from modelplane.core.jobs import OutcomeStatus, ShardExecutor, ShardOutcome, ShardPlan, shard_id
from modelplane.errors import Conflict, ModelplaneError, NotReady, StoreUnavailable
from modelplane.observe.usage import UsageInterval, WorkloadKind, record_usage
from modelplane.registry.service import Registry
from modelplane.spec.cluster import ClusterSpec
from modelplane.spec.job import Job
from modelplane.store.jobs import (
    ACTIVE_STATES,
    FINISHED_STATES,
    JobRecord,
    JobState,
    JobStore,
    NewShard,
    ShardRecord,
    ShardState,
)
from modelplane.store.resources import Resource, ResourceStore
from modelplane.types import Clock, SystemClock

__all__ = [
    "KIND",
    "ConditionType",
    "JobController",
    "Reason",
    "capacity_of",
    "degrader_effects",
    "job_cost",
    "shard_demand",
]

log = logging.getLogger(__name__)

KIND = "Job"
_STOP_GRACE_S = 5.0


class ConditionType(StrEnum):
    ADMITTED = "Admitted"
    """The queue admitted the job: a shard of it has started."""
    FINISHED = "Finished"
    """The job ended: succeeded, failed or cancelled."""


class Reason(StrEnum):
    PLANNING = "Planning"
    """Submitted; its inputs are being checked and its shards planned."""
    WAITING = "Waiting"
    """Planned, not admitted: over its team's quota, or no room (the message says which)."""
    RUNNING = "Running"
    """Admitted and not finished."""
    SUCCEEDED = "Succeeded"
    """Every shard is done and the output is marked finished."""
    FAILED = "Failed"
    """A check or a shard failed (past its retries), or the deadline passed."""
    CANCELLED = "Cancelled"
    """Someone cancelled it."""


def shard_demand(job: Job) -> Demand:
    """A shard's reservation as a scheduler demand; more than one GPU is whole devices."""
    r = job.resources
    gpus = math.ceil(r.gpus) if r.gpus > 0 else 0
    milli = (GPU_MILLI if gpus > 1 else max(1, round(r.gpus * GPU_MILLI))) if gpus else 0
    models = frozenset({r.gpu_model}) if r.gpu_model else frozenset()
    return Demand(r.cpu_milli, r.memory_mb, gpus, milli, models)


def capacity_of(cluster: ClusterSpec) -> dict[str, int]:
    """What the nodes hold in all, as quota resources."""
    out: dict[str, int] = {"cpu": 0, "memory": 0, "gpu": 0}
    for node in cluster.nodes:
        out["cpu"] += node.cpu_milli
        out["memory"] += node.memory_mib
        if node.gpus is not None:
            total = node.gpus.count * GPU_MILLI
            out["gpu"] += total
            key = f"gpu/{node.gpus.model}"
            out[key] = out.get(key, 0) + total
    return out


def job_cost(shards: list[ShardRecord], demand: Demand, cluster: ClusterSpec) -> float:
    """What a job's attempts cost so far: reserved seconds x the share of the first node
    they reserved (its largest resource share) x that node's price."""
    if not cluster.nodes:
        return 0.0
    node = cluster.nodes[0]
    gpu_cap = node.gpus.count * GPU_MILLI if node.gpus is not None else 0
    shares = [demand.cpu_milli / node.cpu_milli, demand.memory_mib / node.memory_mib]
    if gpu_cap:
        shares.append(demand.gpu_total / gpu_cap)
    seconds = sum(s.wall_seconds for s in shards)
    return seconds / 3600.0 * max(shares) * node.cost_per_hour


@dataclass(slots=True)
class _Active:
    """One active job as this pass sees it."""

    record: JobRecord
    job: Job
    shards: list[ShardRecord]

    @property
    def planned(self) -> PlannedJob:
        plans = tuple(
            ShardPlan(s.index, s.row_start, s.row_stop, s.row_groups) for s in self.shards
        )
        r = self.record
        return PlannedJob(plans, r.rows_total, r.model_ref, r.model_digest, r.output_url)


class JobController:
    """See the module docstring. ``degradation`` says which degradation steps are in force
    (the degrader's); ``cluster`` gives the node capacity batch work shares with serving."""

    def __init__(
        self,
        registry: Registry,
        executor: ShardExecutor,
        planner: JobPlanner,
        cluster: Callable[[], ClusterSpec],
        *,
        degradation: Callable[[], Effects] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.registry = registry
        self.resources = ResourceStore(registry.engine)
        self.jobs = JobStore(registry.engine)
        self.executor = executor
        self.planner = planner
        self.cluster = cluster
        self.degradation = degradation
        self._clock = clock or SystemClock()
        self.state = QueueState()

    async def run(self, stop: asyncio.Event, interval_s: float = 0.5) -> None:
        """Reconcile every ``interval_s`` until ``stop`` is set; errors are logged."""
        await every(stop, interval_s, self.reconcile, log=log, what="job pass")

    async def reconcile(self) -> None:
        await asyncio.to_thread(self.reconcile_now)

    def reconcile_now(self) -> None:
        """One pass (blocking: it stops processes and reads datasets' metadata)."""
        specs = {r.name: r for r in self.resources.list(KIND)}
        runs = {r.name: r for r in self.jobs.list_jobs()}
        self._sync_runs(specs, runs)
        runs = {r.name: r for r in self.jobs.list_jobs()}
        for record in runs.values():
            if record.state is JobState.PENDING and record.name in specs:
                self._plan(record, _spec(specs[record.name]))
        runs = {r.name: r for r in self.jobs.list_jobs()}
        self._collect(specs, runs)
        active = self._active(specs)
        self._end(specs, active)
        active = self._active(specs)
        self._queue(active)
        self._write_status(specs)

    # -- 1. runs ----------------------------------------------------------------------

    def _sync_runs(self, specs: Mapping[str, Resource], runs: Mapping[str, JobRecord]) -> None:
        now = self._clock.wall()
        for name, resource in specs.items():
            if name not in runs:
                job = _spec(resource)
                self.jobs.create(
                    name=name, uid=str(uuid.uuid4()), generation=resource.generation,
                    team=job.team, tier=job.tier, work_type=job.work.type,
                    submitted_at=resource.updated_at.timestamp(), now=now,
                )  # fmt: skip
        for name, record in runs.items():
            if name not in specs:
                self._stop_attempts(record, OutcomeStatus.CANCELLED)
                self.jobs.forget(name)

    # -- 2. plan -----------------------------------------------------------------------

    def _plan(self, record: JobRecord, job: Job) -> None:
        now = self._clock.wall()
        try:
            planned = self.planner.plan(job, record.uid)
        except StoreUnavailable:
            raise  # the store's trouble, not the job's: the next pass plans it again
        except Exception as exc:  # a check that failed, or a dataset a driver cannot read
            self.jobs.set_state(record.name, JobState.FAILED, f"invalid: {_text(exc)}", now=now)
            return
        shards = [NewShard(p.index, p.row_start, p.row_stop, p.row_groups) for p in planned.shards]
        self.jobs.planned(
            record.name, shards, rows_total=planned.rows, model_ref=planned.model_ref,
            model_digest=planned.model_digest, output_url=planned.output_url, now=now,
        )  # fmt: skip

    # -- 3. outcomes -------------------------------------------------------------------

    def _collect(self, specs: Mapping[str, Resource], runs: Mapping[str, JobRecord]) -> None:
        known = set(self.executor.running())  # before poll: an attempt ending now is known
        outcomes = self.executor.poll()
        by_uid = {r.uid: r for r in runs.values()}
        reported = set()
        for outcome in outcomes:
            record = by_uid.get(outcome.job_uid)
            reported.add(outcome.attempt_id)
            if record is not None and record.name in specs:
                self._record(record, _spec(specs[record.name]), outcome)
        now = self._clock.wall()
        running = [r for r in runs.values() if r.state is JobState.RUNNING]
        for name, shards in self.jobs.shards([r.name for r in running]).items():
            record = runs[name]
            for shard in shards:
                attempt = f"{shard_id(record.uid, shard.index)}#{shard.attempts}"
                if shard.state is ShardState.RUNNING and attempt not in known | reported:
                    self.jobs.shard_ended(
                        name, shard.index, state=ShardState.PENDING, now=now,
                        message=f"shard {shard.index} attempt {shard.attempts} was lost with"
                        " the control plane; it will run again (finished output is kept)",
                    )  # fmt: skip

    def _record(self, record: JobRecord, job: Job, outcome: ShardOutcome) -> None:
        now, index = self._clock.wall(), outcome.index
        usage = {
            "wall_seconds": outcome.wall_seconds,
            "cpu_seconds": outcome.cpu_seconds,
            "gpu_seconds": outcome.gpu_seconds,
            "peak_memory_mib": outcome.peak_memory_mib,
        }
        self._record_usage(record, job, outcome)
        took = f"{outcome.wall_seconds:.2f}s"
        if outcome.status is OutcomeStatus.DONE:
            how = " (its output was already written)" if outcome.reused else ""
            self.jobs.shard_ended(
                record.name, index, state=ShardState.DONE, now=now, rows=outcome.rows,
                usage=usage, message=f"shard {index} done: {outcome.rows} rows in {took}{how}",
            )  # fmt: skip
        elif outcome.status is OutcomeStatus.FAILED:
            self._failed(record, job, outcome, usage)
        else:
            what = "preempted" if outcome.status is OutcomeStatus.PREEMPTED else "cancelled"
            self.jobs.shard_ended(
                record.name, index, state=ShardState.PENDING, now=now, usage=usage,
                message=f"shard {index} attempt {outcome.attempt} {what} after {took}",
            )  # fmt: skip

    def _failed(
        self, record: JobRecord, job: Job, outcome: ShardOutcome, usage: dict[str, float]
    ) -> None:
        now, index = self._clock.wall(), outcome.index
        error = outcome.error or "the shard failed without a message"
        shards = self.jobs.shards([record.name])[record.name]
        failures = next((s.failures for s in shards if s.index == index), 0) + 1
        limit = job.retries.limit
        if failures > limit:
            self.jobs.shard_ended(
                record.name, index, state=ShardState.FAILED, now=now, error=error, failed=True,
                usage=usage, message=f"shard {index} failed ({failures} of {limit + 1}"
                f" attempts): {error}",
            )  # fmt: skip
            reason = f"shard {index} failed after {failures} attempt(s): {error}"
            self.jobs.set_state(record.name, JobState.FAILED, reason, now=now)
            self._stop_attempts(record, OutcomeStatus.CANCELLED)
            return
        wait = job.retries.backoff_s * 2 ** (failures - 1)
        self.jobs.shard_ended(
            record.name, index, state=ShardState.PENDING, now=now, error=error, failed=True,
            not_before=now + wait, usage=usage,
            message=f"shard {index} attempt {outcome.attempt} failed: {error}; retry"
            f" {failures} of {limit} in {wait:g}s",
        )  # fmt: skip

    def _record_usage(self, record: JobRecord, job: Job, outcome: ShardOutcome) -> None:
        if outcome.finished_at <= outcome.started_at:
            return
        node = outcome.node
        if node is None:  # the executor's own machine: the cluster model's first node
            cluster = self.cluster()
            node = cluster.nodes[0].name if cluster.nodes else "local"
        r = job.resources
        try:
            record_usage(
                self.registry.engine,
                UsageInterval(
                    kind=WorkloadKind.SHARD, team=record.team, node=node, tier=record.tier,
                    start=outcome.started_at, end=outcome.finished_at, cpu_milli=r.cpu_milli,
                    memory_mib=r.memory_mb, gpu_fraction=r.gpus, gpu_model=r.gpu_model,
                    cpu_seconds=outcome.cpu_seconds, memory_peak_mib=outcome.peak_memory_mib,
                    job=record.name, shard=outcome.index,
                    queue_wait_s=max(0.0, (record.admitted_at or outcome.started_at)
                                     - record.submitted_at),
                ),
            )  # fmt: skip
        except ModelplaneError as exc:
            log.warning("usage of %s not recorded: %s", outcome.attempt_id, exc)

    # -- 4. ends -----------------------------------------------------------------------

    def _active(self, specs: Mapping[str, Resource]) -> list[_Active]:
        records = [r for r in self.jobs.list_jobs(states=ACTIVE_STATES) if r.name in specs]
        shards = self.jobs.shards([r.name for r in records])
        return [_Active(r, _spec(specs[r.name]), shards[r.name]) for r in records]

    def _end(self, specs: Mapping[str, Resource], active: list[_Active]) -> None:
        now = self._clock.wall()
        for item in active:
            record, job = item.record, item.job
            deadline = job.deadline.timestamp() if job.deadline is not None else None
            if record.state is JobState.PENDING:
                continue
            if deadline is not None and now > deadline:
                reason = f"passed its deadline {job.deadline:%Y-%m-%d %H:%M:%S %Z}"
                self.jobs.set_state(record.name, JobState.FAILED, reason, now=now)
                self._stop_attempts(record, OutcomeStatus.CANCELLED)
            elif item.shards and all(s.state is ShardState.DONE for s in item.shards):
                self._succeed(item)
        for record in self.jobs.list_jobs(states=FINISHED_STATES):
            self._stop_attempts(record, OutcomeStatus.CANCELLED)

    def _succeed(self, item: _Active) -> None:
        now, record = self._clock.wall(), item.record
        rows = sum(s.rows or 0 for s in item.shards)
        try:
            self.planner.finish(item.job, record.uid, item.planned, rows)
        except Exception as exc:  # one job's output must not stop the queue's pass
            reason = f"finishing: {_text(exc)}"
            self.jobs.set_state(record.name, JobState.FAILED, reason, now=now)
            return
        reason = f"{len(item.shards)} shard(s), {rows} rows done"
        self.jobs.set_state(record.name, JobState.SUCCEEDED, reason, now=now)

    def _stop_attempts(self, record: JobRecord, reason: OutcomeStatus) -> None:
        prefix = f"{record.uid}/"
        for attempt in self.executor.running():
            if attempt.startswith(prefix):
                self.executor.stop(attempt, reason=reason, grace_s=_STOP_GRACE_S)

    # -- 5. queue ----------------------------------------------------------------------

    def _queue(self, active: list[_Active]) -> None:
        now = self._clock.wall()
        items = [a for a in active if a.record.state in (JobState.QUEUED, JobState.RUNNING)]
        policy = applied_policy(self.resources)
        cluster = self.cluster()
        active_steps = self.degradation() if self.degradation is not None else Effects()
        queued = tuple(self._queued(item, cluster, now) for item in items)
        serving = tuple(endpoint_workloads(self.registry, self.resources))
        snapshot = QueueSnapshot(
            queued, capacity_of(cluster), serving, active_steps.paused_tiers,
            active_steps.preempt_borrowed_tiers,
        )  # fmt: skip
        decision, self.state = decide(snapshot, policy, now, self.state)
        by_name = {item.record.name: item for item in items}
        for stop in decision.stops:
            self._preempt(by_name[stop.job], stop)
        for start in decision.starts:
            self._start(by_name[start.job], start.borrowed, now)
        for item in items:
            if item.record.name in decision.waiting:
                self.jobs.set_reason(item.record.name, decision.waiting[item.record.name], now=now)
            elif item.record.name in {s.job for s in decision.starts} or any(
                s.state is ShardState.RUNNING for s in item.shards
            ):
                self.jobs.set_reason(item.record.name, "running", now=now)

    def _queued(self, item: _Active, cluster: ClusterSpec, now: float) -> QueuedJob:
        job, record = item.job, item.record
        ready = sum(
            1
            for s in item.shards
            if s.state is ShardState.PENDING and (s.not_before is None or s.not_before <= now)
        )
        running = tuple(
            RunningShard(s.index, s.started_at or now, s.borrowed)
            for s in item.shards
            if s.state is ShardState.RUNNING
        )
        demand = shard_demand(job)
        blocked = None
        if job.budget is not None:
            spent = job_cost(item.shards, demand, cluster)
            if spent >= job.budget.amount:
                budget = f"{job.budget.amount:g} {job.budget.currency}"
                blocked = f"over its budget: spent {spent:.4f} of {budget}"
        return QueuedJob(
            record.name, record.team, record.tier, record.submitted_at, demand,
            job.parallelism.min, job.parallelism.max, ready, running, blocked,
        )  # fmt: skip

    def _preempt(self, item: _Active, stop: Stop) -> None:
        shard = next(s for s in item.shards if s.index == stop.index)
        attempt = f"{shard_id(item.record.uid, stop.index)}#{shard.attempts}"
        self.jobs.log(
            item.record.name,
            f"shard {stop.index} preempted ({stop.reason.value}): {stop.message};"
            f" work lost {stop.work_lost:.3g}",
            now=self._clock.wall(),
            shard=stop.index,
        )
        self.executor.stop(attempt, reason=OutcomeStatus.PREEMPTED, grace_s=_STOP_GRACE_S)

    def _start(self, item: _Active, borrowed: tuple[bool, ...], now: float) -> None:
        record, job = item.record, item.job
        ready = [
            s
            for s in item.shards
            if s.state is ShardState.PENDING and (s.not_before is None or s.not_before <= now)
        ]
        planned = item.planned
        if record.admitted_at is None and ready:
            try:
                self.planner.claim(job, record.uid, planned)
            except Exception as exc:  # one job's output must not stop the queue's pass
                reason = f"invalid: {_text(exc)}"
                self.jobs.set_state(record.name, JobState.FAILED, reason, now=now)
                return
        for shard, flag in zip(ready, borrowed, strict=False):
            try:
                attempt = self.jobs.shard_started(
                    record.name, shard.index, borrowed=flag, now=now, admitted=True
                )
            except Conflict:
                return  # cancelled since this pass read it
            plan = planned.shards[shard.index]
            try:
                self.executor.start(self.planner.task(job, record.uid, plan, attempt, planned))
            except Exception as exc:  # a package that cannot be fetched, a process that won't
                # a backend not ready (its cluster being joined again) is no shard's failure
                failed = not isinstance(exc, NotReady)
                wait = exc.retry_after_s if isinstance(exc, NotReady) else job.retries.backoff_s
                self.jobs.shard_ended(
                    record.name, shard.index, state=ShardState.PENDING, now=now,
                    error=_text(exc), failed=failed, not_before=now + wait,
                    message=f"shard {shard.index} could not start: {_text(exc)}",
                )  # fmt: skip

    # -- 6. status ---------------------------------------------------------------------

    def _write_status(self, specs: Mapping[str, Resource]) -> None:
        runs = self.jobs.list_jobs()
        shards = self.jobs.shards([r.name for r in runs if not _settled(specs.get(r.name), r)])
        for record in runs:
            resource = specs.get(record.name)
            if resource is None or record.name not in shards:
                continue
            status = self._status(resource, record, shards[record.name])
            if status != resource.status:
                self.resources.set_status(KIND, record.name, status)

    def _status(
        self, resource: Resource, record: JobRecord, shards: list[ShardRecord]
    ) -> dict[str, Any]:
        previous = resource.status or {}
        counts = {state.value: 0 for state in ShardState}
        for shard in shards:
            counts[shard.state.value] += 1
        done_rows = sum(s.rows or 0 for s in shards if s.state is ShardState.DONE)
        admitted = record.admitted_at is not None
        wait_reason = Reason.PLANNING if record.state is JobState.PENDING else Reason.WAITING
        finished = {
            JobState.SUCCEEDED: Reason.SUCCEEDED,
            JobState.FAILED: Reason.FAILED,
            JobState.CANCELLED: Reason.CANCELLED,
        }.get(record.state)
        conditions = [
            _condition(previous, ConditionType.ADMITTED, admitted,
                       Reason.RUNNING if admitted else wait_reason,
                       "admitted" if admitted else record.reason, resource.generation,
                       self._clock.wall()),
            _condition(previous, ConditionType.FINISHED, finished is not None,
                       finished or (Reason.RUNNING if admitted else wait_reason),
                       record.reason, resource.generation, self._clock.wall()),
        ]  # fmt: skip
        return {
            "observed_generation": resource.generation,
            "uid": record.uid,
            "state": record.state.value,
            "reason": record.reason,
            "model": record.model_ref,
            "digest": record.model_digest,
            "shards": {"total": record.shards_total, **counts},
            "rows": {"done": done_rows, "total": record.rows_total},
            "conditions": conditions,
        }


def _text(exc: Exception) -> str:
    return exc.message if isinstance(exc, ModelplaneError) else f"{type(exc).__name__}: {exc}"


def _settled(resource: Resource | None, record: JobRecord) -> bool:
    """A finished job whose status already says so: nothing to write again."""
    if resource is None or not record.finished:
        return False
    return (resource.status or {}).get("state") == record.state.value


def _spec(resource: Resource) -> Job:
    return Job.model_validate(resource.spec)


def _condition(
    previous: Mapping[str, Any],
    kind: ConditionType,
    ok: bool,
    reason: Reason,
    message: str,
    generation: int,
    now: float,
) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": kind.value,
        "status": "True" if ok else "False",
        "reason": reason.value,
        "message": message,
        "observed_generation": generation,
    }
    old = next((c for c in previous.get("conditions", []) if c.get("type") == kind.value), None)
    same = old is not None and old.get("status") == condition["status"]
    stamp = datetime.fromtimestamp(now, UTC).isoformat()
    condition["last_transition_time"] = old.get("last_transition_time") if same and old else stamp
    return condition


def degrader_effects(degrader: Degrader) -> Callable[[], Effects]:
    """What the degrader's active steps mean now, for the queue: ``pause-batch-admission``
    and ``preempt-borrowed-batch`` act through this."""

    def now() -> Effects:
        if degrader.state.level == 0:
            return Effects()
        policy = applied_policy(degrader.resources)
        return effects(policy.degradation.steps[: degrader.state.level])

    return now
