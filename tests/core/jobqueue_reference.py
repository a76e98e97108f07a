"""The job queue's pass as it was before admission kept running totals (issue 14): the
oracle that ``tests/core/test_jobqueue.py`` compares :func:`modelplane.core.jobqueue.decide`
with, on top of the slow reference admission. Do not optimise it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

from modelplane.core.admission import Admission, AdmissionSnapshot, AdmissionState, Admitted
from modelplane.core.cluster import GPU_MILLI, Binding, Demand, Running, Workload, WorkloadKind
from modelplane.core.jobqueue import (
    GROWTH_DELAY_S,
    QueueDecision,
    QueuedJob,
    QueueSnapshot,
    QueueState,
    RunningShard,
    Start,
    Stop,
    StopReason,
)
from modelplane.core.preemption import floor_holdings, work_lost
from modelplane.spec.policy import Floor, Policy

from .admission_reference import admit

__all__ = ["decide"]

Vector = dict[str, int]


def shard_workload(job: QueuedJob, slot: str, *, growth: bool = False) -> Workload:
    """One shard of ``job`` as the scheduler's workload (``job/slot``)."""
    return Workload(
        f"{job.name}/{slot}",
        job.shard,
        team=job.team,
        tier=job.tier,
        kind=WorkloadKind.JOB,
        submitted_at=job.submitted_at + (GROWTH_DELAY_S if growth else 0.0),
    )


@dataclass(slots=True)
class _Pass:
    """Per-call scratch; never escapes :func:`decide`."""

    policy: Policy
    now: float
    jobs: dict[str, QueuedJob]
    free: Vector
    holding: dict[str, tuple[QueuedJob, RunningShard]]
    """Running shards not stopped in this pass, by workload name."""
    stops: list[Stop] = field(default_factory=list)
    starts: dict[str, list[bool]] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)


def decide(
    snapshot: QueueSnapshot, config: Policy, now: float, state: QueueState
) -> tuple[QueueDecision, QueueState]:
    """One pass of the queue; see the module docstring for the steps."""
    work = _begin(snapshot, config, now)
    _make_room_for_serving(work)
    _preempt_borrowed(work, snapshot.preempt_borrowed_tiers)
    gangs = _admit(work, snapshot)
    _shrink_for(work, gangs)
    waiting_since = {
        name: state.pending_since.get(name, now) for name in work.waiting if name in work.jobs
    }
    decision = QueueDecision(
        starts=tuple(Start(job, tuple(flags)) for job, flags in work.starts.items()),
        stops=tuple(work.stops),
        waiting=dict(work.waiting),
    )
    return decision, QueueState(waiting_since)


def _begin(snapshot: QueueSnapshot, policy: Policy, now: float) -> _Pass:
    free: Vector = dict(snapshot.capacity)
    for replica in snapshot.serving:
        _take(free, replica.demand.vector())
    holding: dict[str, tuple[QueuedJob, RunningShard]] = {}
    for job in snapshot.jobs:
        for shard in job.running:
            holding[f"{job.name}/{shard.index}"] = (job, shard)
            _take(free, job.shard.vector())
    return _Pass(policy, now, {j.name: j for j in snapshot.jobs}, free, holding)


def _take(free: Vector, vector: Mapping[str, int]) -> None:
    for resource, amount in vector.items():
        if amount:
            free[resource] = free.get(resource, 0) - amount


def _give(free: Vector, vector: Mapping[str, int]) -> None:
    for resource, amount in vector.items():
        if amount:
            free[resource] = free.get(resource, 0) + amount


def _short(free: Mapping[str, int], vector: Mapping[str, int]) -> dict[str, int]:
    """What ``vector`` lacks in ``free``, per resource (empty when it fits)."""
    return {r: a - free.get(r, 0) for r, a in vector.items() if a and a > free.get(r, 0)}


def _running(job: QueuedJob, shard: RunningShard) -> Running:
    workload = shard_workload(job, str(shard.index))
    return Running(workload, Binding(0), started_at=shard.started_at, borrowed=shard.borrowed)


def _stop(work: _Pass, name: str, reason: StopReason, message: str) -> None:
    job, shard = work.holding.pop(name)
    lost = work_lost(_running(job, shard), work.now)
    work.stops.append(Stop(job.name, shard.index, reason, message, lost))
    _give(work.free, job.shard.vector())


def _victim_rank(work: _Pass, name: str) -> tuple[int, int, float, str]:
    job, shard = work.holding[name]
    priority = work.policy.tier(job.tier).priority
    return (priority, 0 if shard.borrowed else 1, work_lost(_running(job, shard), work.now), name)


def _floors_allow(floors: tuple[Floor, ...], held: list[int], job: QueuedJob) -> bool:
    """Count one shard of ``job`` out of every floor it covers, unless one would break."""
    vector = job.shard.vector()
    after = list(held)
    for i, floor in enumerate(floors):
        covered = (floor.tier is None or floor.tier == job.tier) and (
            floor.team is None or floor.team == job.team
        )
        if covered and vector.get(floor.resource, 0):
            after[i] -= vector[floor.resource]
            if after[i] < floor.amount:
                return False
    held[:] = after
    return True


def _make_room_for_serving(work: _Pass) -> None:
    """Step 1: stop shards, cheapest first, until serving's reservations fit."""
    floors = work.policy.floors
    held = floor_holdings(floors, [_running(j, s) for j, s in work.holding.values()])
    while short := {r: -a for r, a in work.free.items() if a < 0}:
        candidates = sorted(
            (
                name
                for name, (job, _) in work.holding.items()
                if work.policy.tier(job.tier).preemptible
                and any(job.shard.vector().get(r, 0) for r in short)
            ),
            key=lambda name: _victim_rank(work, name),
        )
        chosen = next(
            (n for n in candidates if _floors_allow(floors, held, work.holding[n][0])), None
        )
        if chosen is None:
            return  # nothing more may be taken from batch: serving waits on its own
        needs = ", ".join(f"{r} {a}" for r, a in sorted(short.items()))
        _stop(work, chosen, StopReason.SERVING, f"serving replicas need the capacity ({needs})")


def _preempt_borrowed(work: _Pass, tiers: frozenset[str]) -> None:
    """Step 2: the ``preempt-borrowed-batch`` degradation step, while it is active."""
    if not tiers:
        return
    for name, (job, shard) in list(work.holding.items()):
        if shard.borrowed and job.tier in tiers:
            _stop(work, name, StopReason.DEGRADED, "degraded: borrowed batch work is preempted")


@dataclass(frozen=True, slots=True)
class _Gang:
    """A job that runs nothing and asked for its minimum, admitted but short of room."""

    job: QueuedJob
    demand: Vector
    borrowed: tuple[bool, ...]


def _candidates(work: _Pass, snapshot: QueueSnapshot) -> list[Workload]:
    """Every job's minimum (so each waiting job learns why), and extra shards only as many
    as the room left could hold: at depth most jobs get no room, and asking admission
    about their growth would only cost time."""
    running: dict[str, int] = {}
    for job, _ in work.holding.values():
        running[job.name] = running.get(job.name, 0) + 1
    out: list[Workload] = []
    growth: list[tuple[QueuedJob, int, int]] = []
    for job in snapshot.jobs:
        if job.ready <= 0:
            continue
        if job.blocked is not None:
            work.waiting[job.name] = job.blocked
            continue
        now_running = running.get(job.name, 0)
        want = max(0, min(job.max_shards, now_running + job.ready) - now_running)
        floor = max(0, min(job.min_shards, now_running + job.ready) - now_running)
        if floor and now_running == 0:
            size = _gang_size(job.shard, floor)
            out.append(_gang_workload(job, size))
            floor = size
        else:
            out += [shard_workload(job, f"+{k}") for k in range(floor)]
        if want > floor:
            growth.append((job, floor, want))
    budget = _room_for(work.free, [job for job, _, _ in growth])
    priority = {t.name: t.priority for t in work.policy.tiers}
    growth.sort(key=lambda g: (-priority.get(g[0].tier, 0), g[0].submitted_at, g[0].name))
    for job, floor, want in growth:
        if budget <= 0:
            break
        extra = min(want - floor, budget)
        budget -= extra
        out += [shard_workload(job, f"*{k}", growth=True) for k in range(floor, floor + extra)]
    return out


def _gang_size(demand: Demand, wanted: int) -> int:
    """Shards a gang asks for at once: a fraction of one GPU cannot be multiplied into one
    demand, so such a job starts one shard at a time."""
    return 1 if demand.gpus == 1 and demand.gpu_milli < GPU_MILLI else wanted


@functools.lru_cache(maxsize=1024)
def _times(d: Demand, size: int) -> Demand:
    if size == 1:
        return d
    return Demand(d.cpu_milli * size, d.memory_mib * size, d.gpus * size, d.gpu_milli, d.gpu_models)


def _gang_workload(job: QueuedJob, size: int) -> Workload:
    """A job's minimum as one workload: admission takes it whole or not at all."""
    demand = _times(job.shard, size)
    return Workload(
        f"{job.name}/g{size}", demand, team=job.team, tier=job.tier, kind=WorkloadKind.JOB,
        submitted_at=job.submitted_at,
    )  # fmt: skip


def _room_for(free: Mapping[str, int], jobs: list[QueuedJob]) -> int:
    """How many shards, of the smallest size among ``jobs`` per resource, fit in ``free``."""
    smallest: dict[str, int] = {}
    for demand in {job.shard for job in jobs}:  # a few sizes among many jobs
        for resource, amount in demand.vector().items():
            if amount > 0:
                smallest[resource] = min(smallest.get(resource, amount), amount)
    if not smallest:
        return sum(j.max_shards for j in jobs)
    return max(0, min(free.get(r, 0) // a for r, a in smallest.items()))


def _admit(work: _Pass, snapshot: QueueSnapshot) -> list[_Gang]:
    """Steps 3 and 4: admission under quota, then room; returns gangs short of room."""
    pending = _candidates(work, snapshot)
    if not pending:
        return []
    admitted = [Admitted(w) for w in snapshot.serving]
    admitted += [Admitted(_running(j, s).workload, s.borrowed) for j, s in work.holding.values()]
    paused = snapshot.paused_tiers
    decision, _ = admit(
        AdmissionSnapshot(tuple(pending), tuple(admitted), paused), work.policy, work.now,
        AdmissionState(),
    )  # fmt: skip
    for name in decision.evict:
        if name in work.holding:
            _stop(work, name, StopReason.RECLAIM, "its lender reclaims the borrowed quota")
    short_gangs: list[_Gang] = []
    for item in decision.admissions:
        job_name, slot = item.workload.rsplit("/", 1)
        job = work.jobs[job_name]
        if slot.startswith("g"):
            short = _start_gang(work, job, item, int(slot[1:]))
            if short is not None:
                short_gangs.append(short)
        elif job.running or job_name in work.starts:
            _start_one(work, job, item)
    return short_gangs


def _start_gang(work: _Pass, job: QueuedJob, item: Admission, size: int) -> _Gang | None:
    if not item.admitted:
        work.waiting[job.name] = _quota_line(job, item.reason)
        return None
    demand = {r: a * size for r, a in job.shard.vector().items()}
    lacking = _short(work.free, demand)
    if lacking:
        work.waiting[job.name] = f"waiting for capacity: {size} shard(s) need {_fmt(lacking)} more"
        return _Gang(job, demand, (item.borrowed,) * size)
    _take(work.free, demand)
    work.starts[job.name] = [item.borrowed] * size
    return None


def _start_one(work: _Pass, job: QueuedJob, item: Admission) -> None:
    vector = job.shard.vector()
    if item.admitted and not _short(work.free, vector):
        _take(work.free, vector)
        work.starts.setdefault(job.name, []).append(item.borrowed)


def _quota_line(job: QueuedJob, reason: str) -> str:
    if "paused" in reason:
        return f"waiting: {reason} (degradation)"
    return f"waiting for quota: {reason}"  # the reason names the team


def _fmt(vector: Mapping[str, int]) -> str:
    def one(resource: str, amount: int) -> str:
        if resource == "cpu":
            return f"{amount}m CPU"
        if resource == "memory":
            return f"{amount} MiB memory"
        return f"{amount} milli-GPU ({resource})"

    return ", ".join(one(r, a) for r, a in sorted(vector.items()))


def _shrink_for(work: _Pass, gangs: list[_Gang]) -> None:
    """Step 5: jobs above their minimum give back shards to gangs that lack room."""
    counts: dict[str, int] = {}
    for job, _ in work.holding.values():
        counts[job.name] = counts.get(job.name, 0) + 1
    extras = sorted(
        (
            name
            for name, (job, _) in work.holding.items()
            if counts[job.name] > job.min_shards and work.policy.tier(job.tier).preemptible
        ),
        key=lambda name: _victim_rank(work, name)[2:],
    )
    for gang in gangs:
        if not extras:
            return
        mine = work.policy.tier(gang.job.tier).priority
        need = _short(work.free, gang.demand)
        chosen: list[str] = []
        for name in extras:
            if not need:
                break
            job = work.holding[name][0]
            if counts[job.name] <= job.min_shards or work.policy.tier(job.tier).priority > mine:
                continue
            counts[job.name] -= 1
            chosen.append(name)
            need = {r: a - job.shard.vector().get(r, 0) for r, a in need.items()}
            need = {r: a for r, a in need.items() if a > 0}
        if need:
            for name in chosen:  # shrinking cannot make room: nothing is stopped for it
                counts[work.holding[name][0].name] += 1
            continue
        for name in chosen:
            extras.remove(name)
            message = f"shrinking toward its minimum for {gang.job.name}"
            _stop(work, name, StopReason.SHRINK, message)
        # What they free is the gang's: later gangs in this pass must not count it.
        _take(work.free, gang.demand)
        work.waiting[gang.job.name] = f"waiting for {len(chosen)} shard(s) of other jobs to stop"
