"""A discrete-event simulation of the scheduler, calling the production ``core`` functions.

Work arrives with a time and (optionally) a duration. Every ``cycle_s`` seconds one
scheduling cycle runs, as in Kueue: release finished work, then for the pending queue in
policy order: 1. admission under quota, 2. placement, 3. preemption when nothing fits.
Work holds quota only while it runs. Metrics are sampled after every cycle.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from modelplane.core.admission import AdmissionSnapshot, AdmissionState, Admitted, admit
from modelplane.core.cluster import GPU_MILLI, ClusterSnapshot, Node, Running, Workload
from modelplane.core.fragmentation import TaskDistribution, cluster_fragmentation
from modelplane.core.placement import PlacementRequest, PlacementState, place, queue_order
from modelplane.core.preemption import (
    PreemptionRequest,
    PreemptionState,
    floor_holdings,
    preempt,
)
from modelplane.sim.accounting import allocation_by_percent, unallocated_at
from modelplane.spec.policy import Policy

__all__ = ["Arrival", "RunMetrics", "Sample", "simulate"]


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float
    workload: Workload
    duration_s: float | None = None
    """``None`` runs forever (the inflation replay)."""


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    arrived_pct: float
    allocated_pct: float
    fragmentation_pct: float
    pending_by_tier: tuple[tuple[str, int], ...]

    @property
    def hours(self) -> float:
        return self.at / 3600.0


@dataclass(frozen=True, slots=True)
class RunMetrics:
    policy: str
    seed: int
    samples: tuple[Sample, ...]
    preemptions: int
    gpu_hours_lost: float
    floor_violations: int
    decision_s: tuple[float, ...]
    placed: int
    arrived: int
    finished: int = 0
    """Work that ran to its end (departures experiments; 0 where nothing departs)."""
    retried: int = 0
    """Evicted work placed again later."""
    elapsed_s: float = 0.0

    def unallocated_at(self, arrived_pct: float) -> float:
        """The artifact's figure: 100 - mean allocation over samples rounding to that %."""
        curve = allocation_by_percent(
            [s.arrived_pct for s in self.samples], [s.allocated_pct for s in self.samples]
        )
        return unallocated_at(curve, round(arrived_pct))


@dataclass
class _World:
    """Mutable simulation bookkeeping; every decision in it comes from ``core``."""

    policy: Policy
    cluster: ClusterSnapshot
    shapes: TaskDistribution
    seed: int
    running: dict[str, Running] = field(default_factory=dict)
    admitted: dict[str, Admitted] = field(default_factory=dict)
    """The quota view of ``running``, kept beside it so a cycle need not rebuild it."""
    ends: list[tuple[float, str, float]] = field(default_factory=list)
    durations: dict[str, float | None] = field(default_factory=dict)
    pending: list[Workload] = field(default_factory=list)
    parked: list[Workload] = field(default_factory=list)
    """Work that fit nowhere; it is tried again only once something finishes."""
    admission: AdmissionState = field(default_factory=AdmissionState)
    placement: PlacementState = field(default_factory=PlacementState)
    preemption: PreemptionState = field(default_factory=PreemptionState)
    latencies: list[float] = field(default_factory=list)
    preemptions: int = 0
    gpu_hours_lost: float = 0.0
    floor_violations: int = 0
    placed: int = 0
    finished: int = 0
    retried: int = 0
    evicted: set[str] = field(default_factory=set)


def simulate(
    nodes: Sequence[Node],
    arrivals: Iterable[Arrival],
    policy: Policy,
    *,
    seed: int = 0,
    cycle_s: float = 10.0,
    shapes: TaskDistribution | None = None,
    sample_every: int = 1,
    frag_every: int = 10,
    until_s: float | None = None,
) -> RunMetrics:
    """Replay ``arrivals`` (sorted by time) on ``nodes`` under ``policy``.

    The run ends once every arrival is in and nothing more can change (nothing pending, or
    nothing left to finish), or at ``until_s`` (default: the last arrival plus one day of
    simulated time, so work that never fits cannot keep it going).
    """
    began = time.perf_counter()
    ordered = sorted(arrivals, key=lambda a: a.at)
    last = ordered[-1].at if ordered else 0.0
    stop = until_s if until_s is not None else last + 86_400.0
    world = _World(
        policy=policy,
        cluster=ClusterSnapshot.build(nodes),
        shapes=shapes or TaskDistribution.from_demands(a.workload.demand for a in ordered),
        seed=seed,
    )
    capacity = max(world.cluster.gpu_capacity, 1)
    samples: list[Sample] = []
    arrived_gpu, i, cycle, now = 0, 0, 0, 0.0
    # Runs while work arrives or runs; cycles where nothing can change are skipped.
    while (i < len(ordered) or world.ends) and now < stop:
        if world.pending:
            now += cycle_s
        else:
            upcoming = min(
                ordered[i].at if i < len(ordered) else math.inf,
                world.ends[0][0] if world.ends else math.inf,
            )
            now = max(now + cycle_s, math.ceil(upcoming / cycle_s) * cycle_s)
        while i < len(ordered) and ordered[i].at <= now:
            arrival = ordered[i]
            world.pending.append(arrival.workload)
            world.durations[arrival.workload.name] = arrival.duration_s
            arrived_gpu += arrival.workload.demand.gpu_total
            i += 1
        _release(world, now)
        _cycle(world, now)
        cycle += 1
        if cycle % sample_every == 0 or i == len(ordered):
            frag = (
                _frag(world)
                if cycle % frag_every == 0
                else (samples[-1].fragmentation_pct if samples else 0.0)
            )
            samples.append(_sample(world, now, 100.0 * arrived_gpu / capacity, frag))
    return RunMetrics(
        policy=policy.name,
        seed=seed,
        samples=tuple(samples),
        preemptions=world.preemptions,
        gpu_hours_lost=world.gpu_hours_lost,
        floor_violations=world.floor_violations,
        decision_s=tuple(world.latencies),
        placed=world.placed,
        arrived=len(ordered),
        finished=world.finished,
        retried=world.retried,
        elapsed_s=time.perf_counter() - began,
    )


def _release(world: _World, now: float) -> None:
    freed = False
    while world.ends and world.ends[0][0] <= now:
        _, name, started = heapq.heappop(world.ends)
        item = world.running.get(name)
        # An evicted and restarted workload left a stale end event behind.
        if item is not None and item.started_at == started:
            del world.running[name]
            del world.admitted[name]
            world.cluster = world.cluster.release(item.workload.demand, item.binding)
            world.finished += 1
            freed = True
    if freed:
        world.pending += world.parked
        world.parked = []


def _cycle(world: _World, now: float) -> None:
    """1. admission, 2. placement, 3. preemption, for the whole pending queue."""
    if not world.pending:
        return
    snapshot = AdmissionSnapshot(tuple(world.pending), tuple(world.admitted.values()))
    decision, world.admission = admit(snapshot, world.policy, now, world.admission)
    for name in decision.evict:
        _evict(world, name, now)
    ok = {a.workload: a for a in decision.admitted}
    waiting: list[Workload] = []
    for workload in queue_order(world.pending, world.policy):
        verdict = ok.get(workload.name)
        if verdict is None:
            waiting.append(workload)
        elif not _place_one(world, workload, now, verdict.borrowed):
            world.parked.append(workload)
    world.pending = waiting


def _place_one(world: _World, workload: Workload, now: float, borrowed: bool) -> bool:
    started = time.perf_counter()
    request = PlacementRequest(world.cluster, workload, world.shapes)
    decision, world.placement = place(request, world.policy.placement, now, world.placement)
    binding = decision.binding
    if binding is None and world.policy.preemption.enabled:
        pre = PreemptionRequest(world.cluster, tuple(world.running.values()), workload, borrowed)
        floors = world.policy.floors
        before = floor_holdings(floors, world.running.values()) if floors else []
        outcome, world.preemption = preempt(pre, world.policy, now, world.preemption)
        for victim in outcome.victims:
            _evict(world, victim.name, now)
        if floors and outcome.victims:
            # Audits core: a floor crossed by an eviction is a bug, counted not hidden.
            after = floor_holdings(floors, world.running.values())
            world.floor_violations += sum(
                1 for f, b, a in zip(floors, before, after, strict=True) if a < f.amount and a < b
            )
        binding = outcome.binding
    world.latencies.append(time.perf_counter() - started)
    if binding is None:
        return False
    world.cluster = world.cluster.bind(workload.demand, binding)
    world.running[workload.name] = Running(workload, binding, now, None, borrowed)
    world.admitted[workload.name] = Admitted(workload, borrowed)
    duration = world.durations.get(workload.name)
    if duration is not None:
        heapq.heappush(world.ends, (now + duration, workload.name, now))
    world.placed += 1
    if workload.name in world.evicted:
        world.evicted.discard(workload.name)
        world.retried += 1
    return True


def _evict(world: _World, name: str, now: float) -> None:
    item = world.running.pop(name, None)
    if item is None:
        return
    del world.admitted[name]
    world.cluster = world.cluster.release(item.workload.demand, item.binding)
    world.preemptions += 1
    since = item.checkpointed_at if item.checkpointed_at is not None else item.started_at
    world.gpu_hours_lost += (now - since) / 3600 * item.workload.demand.gpu_total / GPU_MILLI
    # Evicted work waits for capacity to free up and runs again from its start (or its
    # checkpoint) for its whole duration; its stale end event is ignored.
    world.evicted.add(name)
    world.parked.append(item.workload)


def _frag(world: _World) -> float:
    c = world.cluster
    frag = cluster_fragmentation(
        c.cpu_free, c.mem_free, c.gpu_free, c.model_idx, shapes=world.shapes, models=c.models
    )
    return 100.0 * frag / max(c.gpu_capacity, 1)


def _sample(world: _World, now: float, arrived_pct: float, frag: float) -> Sample:
    by_tier: dict[str, int] = {}
    for workload in (*world.pending, *world.parked):
        by_tier[workload.tier] = by_tier.get(workload.tier, 0) + 1
    c = world.cluster
    allocated = 100.0 * c.gpu_allocated / max(c.gpu_capacity, 1)
    return Sample(now, arrived_pct, allocated, frag, tuple(sorted(by_tier.items())))
