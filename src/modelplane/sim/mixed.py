"""Jobs and serving on one simulated cluster, decided by the functions the live system uses.

Three kinds of work share priced nodes for a simulated day:

- **serving**: each endpoint's load follows a day curve; the production KPA autoscaler
  (:func:`core.autoscale.autoscale`) turns it into wanted replicas (:func:`diurnal_serving`);
- **jobs**: Poisson arrivals of sharded batch jobs (``parallelism`` min..max, exponential
  shard run times);
- **trace batch pods**: best-effort pods of the openb trace, each a one-shard job that runs
  for the trace's own duration (where it has one; else exponential).

Every cycle (as the live controller does): release what finished; place wanted serving
replicas with :func:`core.placement.place`, preempting batch shards through
:func:`core.preemption.preempt` when no node has room; then one pass of the live job queue,
:func:`core.jobqueue.decide` (admission by :func:`core.admission.admit`, serving first,
victims by the work they would lose, shrink toward ``parallelism.min``), whose stops are
applied and whose starts are placed shard by shard with :func:`core.placement.place`.
A preempted shard loses the work since its own start (finished shards stay) and is retried.

Figures per policy: cost per finished job (the nodes' cost over the day less what serving
reserved, priced by node share: batch runs, lost runs and idle capacity, over the jobs that
finished), serving floor violations (replica-cycles a wanted
serving replica had no place, plus floors crossed by an eviction; the aim is 0), GPU idle
share (GPU capacity-time nobody held), preemptions and GPU-hours lost.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from modelplane.core.cluster import GPU_MILLI, Binding, ClusterSnapshot, Demand, Node, Running
from modelplane.core.cluster import Workload as Work
from modelplane.core.fragmentation import TaskDistribution
from modelplane.core.jobqueue import (
    QueuedJob,
    QueueSnapshot,
    QueueState,
    RunningShard,
    decide,
    shard_workload,
)
from modelplane.core.placement import PlacementRequest, PlacementState, place
from modelplane.core.preemption import (
    PreemptionRequest,
    PreemptionState,
    floor_holdings,
    preempt,
)
from modelplane.sim.engine import Arrival
from modelplane.sim.trace import TracePod
from modelplane.sim.workloads import diurnal_serving
from modelplane.spec.policy import Policy

__all__ = [
    "MixedConfig",
    "MixedJob",
    "MixedMetrics",
    "MixedResult",
    "priced_cluster",
    "poisson_sharded_jobs",
    "run_mixed",
    "serving_for",
    "simulate_mixed",
    "trace_batch_jobs",
]


@dataclass(frozen=True, slots=True)
class MixedConfig:
    """The day to simulate. Rates and sizes fit :func:`priced_cluster`."""

    horizon_s: float = 86_400.0
    cycle_s: float = 60.0
    endpoints: int = 6
    peak_concurrency: float = 100.0
    serving_step_s: float = 300.0
    job_rate_per_h: float = 30.0
    shard_mean_s: float = 1200.0
    trace_pods: int = 150
    """Best-effort openb pods to add as one-shard jobs (0: none, or no trace given)."""


@dataclass(frozen=True, slots=True)
class MixedJob:
    """A sharded batch job: ``durations`` holds each shard's run time."""

    name: str
    team: str
    submitted_at: float
    shard: Demand
    durations: tuple[float, ...]
    min_shards: int = 1
    max_shards: int = 1
    tier: str = "batch"


def priced_cluster() -> list[Node]:
    """Openb-like nodes with hourly prices: 8-GPU G2 nodes, 2-GPU T4 nodes, CPU nodes."""
    nodes = [Node(f"g2-{i}", 96_000, 393_216, "G2", 8, cost_per_hour=16.0) for i in range(6)]
    nodes += [Node(f"t4-{i}", 64_000, 262_144, "T4", 2, cost_per_hour=1.6) for i in range(8)]
    nodes += [Node(f"cpu-{i}", 64_000, 262_144, cost_per_hour=2.0) for i in range(2)]
    return nodes


_SHARD_SHAPES = (
    Demand(8000, 32_768, 1, 1000),
    Demand(4000, 16_384, 1, 500),
    Demand(16_000, 65_536, 2, 1000),
    Demand(8000, 32_768, 0, 0),
)


def poisson_sharded_jobs(seed: int, config: MixedConfig, teams: int = 4) -> list[MixedJob]:
    """Jobs arriving as a Poisson process; 2..8 shards each, exponential shard run times."""
    rng = random.Random(f"mixed-jobs:{seed}")
    out: list[MixedJob] = []
    now = 0.0
    rate = config.job_rate_per_h / 3600.0
    while len(out) < 100_000:  # bounded even for absurd rates
        now += rng.expovariate(rate)
        if now >= config.horizon_s:
            break
        shards = rng.randint(2, 8)
        out.append(
            MixedJob(
                name=f"job-{len(out)}",
                team=f"team-{rng.randrange(teams)}",
                submitted_at=now,
                shard=rng.choice(_SHARD_SHAPES),
                durations=tuple(rng.expovariate(1.0 / config.shard_mean_s) for _ in range(shards)),
                min_shards=1,
                max_shards=min(shards, 4),
            )
        )
    return out


def trace_batch_jobs(pods: Sequence[TracePod], seed: int, config: MixedConfig) -> list[MixedJob]:
    """``config.trace_pods`` best-effort trace pods as one-shard jobs, Poisson over the day."""
    batch = [p for p in pods if p.qos not in ("LS", "Guaranteed")]
    if not batch or config.trace_pods <= 0:
        return []
    rng = random.Random(f"mixed-trace:{seed}")
    picked = rng.sample(batch, min(config.trace_pods, len(batch)))
    known = [d for p in batch if (d := p.duration_s) is not None]
    median = statistics.median(known) if known else config.shard_mean_s
    gap = config.horizon_s / len(picked)
    out, now = [], 0.0
    for pod in picked:
        now += rng.expovariate(1.0 / gap)
        duration = pod.duration_s or rng.expovariate(1.0 / median)
        workload = pod.workload
        out.append(
            MixedJob(
                name=f"trace-{workload.name}",
                team=workload.team,
                submitted_at=min(now, config.horizon_s),
                shard=workload.demand,
                durations=(duration,),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class MixedMetrics:
    policy: str
    seed: int
    jobs: int
    jobs_finished: int
    shards_finished: int
    cost_per_finished_job: float
    batch_spend: float
    """What batch shards reserved, priced by node share (lost runs included)."""
    serving_spend: float
    cluster_cost: float
    serving_short_replica_cycles: int
    floors_crossed: int
    gpu_idle_share: float
    preemptions: int
    gpu_hours_lost: float
    job_hours_mean: float
    """Mean time from submit to the last shard's end, over finished jobs."""
    unplaceable_starts: int
    """Shards the queue admitted that no single node had room for (fragmentation)."""

    @property
    def serving_floor_violations(self) -> int:
        return self.serving_short_replica_cycles + self.floors_crossed


@dataclass
class _Shard:
    binding: Binding
    started: float
    borrowed: bool
    end: float


@dataclass
class _JobState:
    spec: MixedJob
    ready: list[int]
    running: dict[int, _Shard] = field(default_factory=dict)
    done: int = 0
    finished_at: float | None = None


@dataclass
class _World:
    policy: Policy
    cluster: ClusterSnapshot
    shapes: TaskDistribution
    prices: tuple[float, ...]
    placement: PlacementState = field(default_factory=PlacementState)
    preemption: PreemptionState = field(default_factory=PreemptionState)
    queue: QueueState = field(default_factory=QueueState)
    jobs: dict[str, _JobState] = field(default_factory=dict)
    replicas: dict[str, tuple[Work, Binding, float]] = field(default_factory=dict)
    wanted: dict[str, Work] = field(default_factory=dict)
    """Serving replicas the autoscaler wants and that have no place yet."""
    ends: list[tuple[float, str]] = field(default_factory=list)
    batch_spend: float = 0.0
    serving_spend: float = 0.0
    preemptions: int = 0
    gpu_hours_lost: float = 0.0
    floors_crossed: int = 0
    short: int = 0
    unplaceable: int = 0
    shards_finished: int = 0


def _capacity(nodes: Sequence[Node]) -> dict[str, int]:
    out: dict[str, int] = {"cpu": 0, "memory": 0, "gpu": 0}
    for node in nodes:
        out["cpu"] += node.cpu_milli
        out["memory"] += node.memory_mib
        if node.gpu_count:
            total = node.gpu_count * GPU_MILLI
            out["gpu"] += total
            out[f"gpu/{node.gpu_model}"] = out.get(f"gpu/{node.gpu_model}", 0) + total
    return out


def _share(world: _World, demand: Demand, node: int) -> float:
    """The node share a demand reserves: its largest share of any resource there."""
    c = world.cluster
    shares = [demand.cpu_milli / c.cpu_cap[node], demand.memory_mib / c.mem_cap[node]]
    if c.gpu_cap[node]:
        shares.append(demand.gpu_total / c.gpu_cap[node])
    return float(max(shares))


def _running_items(world: _World) -> tuple[Running, ...]:
    items = [
        Running(w, binding, started, None, False) for w, binding, started in world.replicas.values()
    ]
    for state in world.jobs.values():
        for index, shard in state.running.items():
            items.append(
                Running(
                    shard_workload(_queued(state, 0.0), str(index)),
                    shard.binding,
                    shard.started,
                    None,
                    shard.borrowed,
                )
            )
    return tuple(items)


def _queued(state: _JobState, now: float) -> QueuedJob:
    spec = state.spec
    return QueuedJob(
        name=spec.name,
        team=spec.team,
        tier=spec.tier,
        submitted_at=spec.submitted_at,
        shard=spec.shard,
        min_shards=spec.min_shards,
        max_shards=spec.max_shards,
        ready=len(state.ready),
        running=tuple(
            RunningShard(i, s.started, s.borrowed) for i, s in sorted(state.running.items())
        ),
    )


def _stop_shard(world: _World, job: str, index: int, now: float) -> None:
    """Preempt one shard: its node share is paid for, its work since start is lost."""
    state = world.jobs[job]
    shard = state.running.pop(index)
    world.cluster = world.cluster.release(state.spec.shard, shard.binding)
    ran = now - shard.started
    world.batch_spend += _spend(world, state.spec.shard, shard.binding.node, ran)
    world.gpu_hours_lost += ran / 3600 * state.spec.shard.gpu_total / GPU_MILLI
    world.preemptions += 1
    state.ready.append(index)


def _spend(world: _World, demand: Demand, node: int, seconds: float) -> float:
    return _share(world, demand, node) * world.prices[node] * seconds / 3600


def _release(world: _World, now: float) -> None:
    while world.ends and world.ends[0][0] <= now:
        end, name = heapq.heappop(world.ends)
        if name in world.replicas:
            workload, binding, started = world.replicas.pop(name)
            world.cluster = world.cluster.release(workload.demand, binding)
            world.serving_spend += _spend(world, workload.demand, binding.node, end - started)
            continue
        world.wanted.pop(name, None)  # a replica no longer wanted before it got a place
        job, _, index_text = name.rpartition("/")
        state = world.jobs.get(job)
        shard = state.running.get(int(index_text)) if state and index_text.isdigit() else None
        # A stale end: the shard was preempted (and maybe restarted with a later end).
        if state is None or shard is None or shard.end != end:
            continue
        del state.running[int(index_text)]
        world.cluster = world.cluster.release(state.spec.shard, shard.binding)
        world.batch_spend += _spend(
            world, state.spec.shard, shard.binding.node, end - shard.started
        )
        world.shards_finished += 1
        state.done += 1
        if state.done == len(state.spec.durations):
            state.finished_at = end


def _place_serving(world: _World, now: float) -> None:
    """Wanted replicas, highest tier first; preempt batch where no node has room."""
    order = sorted(
        world.wanted.values(),
        key=lambda w: (-world.policy.tier(w.tier).priority, w.submitted_at, w.name),
    )
    for workload in order:
        decision, world.placement = place(
            PlacementRequest(world.cluster, workload, world.shapes),
            world.policy.placement,
            now,
            world.placement,
        )
        binding = decision.binding
        if binding is None:
            running = _running_items(world)
            floors = world.policy.floors
            before = floor_holdings(floors, running) if floors else []
            outcome, world.preemption = preempt(
                PreemptionRequest(world.cluster, running, workload),
                world.policy,
                now,
                world.preemption,
            )
            for victim in outcome.victims:
                job, _, index = victim.name.rpartition("/")
                if job in world.jobs:
                    _stop_shard(world, job, int(index), now)
                elif victim.name in world.replicas:
                    # A lower-tier replica gives way; it waits for a place again.
                    evicted, held, began = world.replicas.pop(victim.name)
                    world.cluster = world.cluster.release(evicted.demand, held)
                    world.serving_spend += _spend(world, evicted.demand, held.node, now - began)
                    world.wanted[victim.name] = evicted
                    world.preemptions += 1
            if floors and outcome.victims:
                after = floor_holdings(floors, _running_items(world))
                world.floors_crossed += sum(
                    1
                    for f, b, a in zip(floors, before, after, strict=True)
                    if a < f.amount and a < b
                )
            binding = outcome.binding
        if binding is None:
            world.short += 1
            continue
        world.cluster = world.cluster.bind(workload.demand, binding)
        world.replicas[workload.name] = (workload, binding, now)
        del world.wanted[workload.name]


def _run_queue(world: _World, now: float, capacity: dict[str, int]) -> None:
    active = [s for s in world.jobs.values() if s.ready or s.running]
    serving = tuple(w for w, _, _ in world.replicas.values()) + tuple(world.wanted.values())
    snapshot = QueueSnapshot(tuple(_queued(s, now) for s in active), capacity, serving)
    decision, world.queue = decide(snapshot, world.policy, now, world.queue)
    for stop in decision.stops:
        if stop.index in world.jobs[stop.job].running:
            _stop_shard(world, stop.job, stop.index, now)
    for start in decision.starts:
        state = world.jobs[start.job]
        for borrowed in start.borrowed:
            if not state.ready:
                break
            index = state.ready[0]
            workload = shard_workload(_queued(state, now), str(index))
            placed, world.placement = place(
                PlacementRequest(world.cluster, workload, world.shapes),
                world.policy.placement,
                now,
                world.placement,
            )
            if placed.binding is None:
                world.unplaceable += 1
                break
            state.ready.pop(0)
            world.cluster = world.cluster.bind(state.spec.shard, placed.binding)
            end = now + state.spec.durations[index]
            state.running[index] = _Shard(placed.binding, now, borrowed, end)
            heapq.heappush(world.ends, (end, workload.name))


def simulate_mixed(
    nodes: Sequence[Node],
    serving: Sequence[Arrival],
    jobs: Sequence[MixedJob],
    policy: Policy,
    *,
    seed: int = 0,
    config: MixedConfig = MixedConfig(),
) -> MixedMetrics:
    """One day of serving and jobs on ``nodes`` under ``policy``."""
    demands = [a.workload.demand for a in serving] + [j.shard for j in jobs]
    world = _World(
        policy=policy,
        cluster=ClusterSnapshot.build(nodes),
        shapes=TaskDistribution.from_demands(demands or [Demand(1000, 1024, 1, GPU_MILLI)]),
        prices=tuple(n.cost_per_hour for n in nodes),
    )
    capacity = _capacity(nodes)
    gpu_capacity = max(world.cluster.gpu_capacity, 1)
    replica_arrivals = sorted(serving, key=lambda a: a.at)
    job_arrivals = sorted(jobs, key=lambda j: j.submitted_at)
    r = j = 0
    idle_gpu_time = 0.0
    steps = math.ceil(config.horizon_s / config.cycle_s)
    for step in range(1, steps + 1):
        now = step * config.cycle_s
        _release(world, now)
        while r < len(replica_arrivals) and replica_arrivals[r].at <= now:
            arrival = replica_arrivals[r]
            world.wanted[arrival.workload.name] = arrival.workload
            if arrival.duration_s is not None:
                heapq.heappush(world.ends, (arrival.at + arrival.duration_s, arrival.workload.name))
            r += 1
        while j < len(job_arrivals) and job_arrivals[j].submitted_at <= now:
            spec = job_arrivals[j]
            world.jobs[spec.name] = _JobState(spec, list(range(len(spec.durations))))
            j += 1
        _place_serving(world, now)
        _run_queue(world, now, capacity)
        idle_gpu_time += (gpu_capacity - world.cluster.gpu_allocated) * config.cycle_s
    end = steps * config.cycle_s
    # Shards still running at the end have reserved their nodes until now.
    for state in world.jobs.values():
        for shard in state.running.values():
            world.batch_spend += _spend(
                world, state.spec.shard, shard.binding.node, end - shard.started
            )
    for workload, binding, started in world.replicas.values():
        world.serving_spend += _spend(world, workload.demand, binding.node, end - started)
    finished = [s for s in world.jobs.values() if s.finished_at is not None]
    cluster_cost = sum(world.prices) * end / 3600
    # Idle capacity is paid for all the same: batch carries what serving did not reserve.
    batch_cost = cluster_cost - world.serving_spend
    return MixedMetrics(
        policy=policy.name,
        seed=seed,
        jobs=len(world.jobs),
        jobs_finished=len(finished),
        shards_finished=world.shards_finished,
        cost_per_finished_job=batch_cost / len(finished) if finished else math.inf,
        batch_spend=world.batch_spend,
        serving_spend=world.serving_spend,
        cluster_cost=cluster_cost,
        serving_short_replica_cycles=world.short,
        floors_crossed=world.floors_crossed,
        gpu_idle_share=idle_gpu_time / (gpu_capacity * end),
        preemptions=world.preemptions,
        gpu_hours_lost=world.gpu_hours_lost,
        job_hours_mean=statistics.fmean(
            ((s.finished_at or 0.0) - s.spec.submitted_at) / 3600 for s in finished
        )
        if finished
        else 0.0,
        unplaceable_starts=world.unplaceable,
    )


def serving_for(seed: int, config: MixedConfig) -> list[Arrival]:
    """The day's serving replicas: diurnal load through the KPA autoscaler."""
    return diurnal_serving(
        seed,
        endpoints=config.endpoints,
        horizon_s=config.horizon_s,
        period_s=config.horizon_s,
        step_s=config.serving_step_s,
        peak_concurrency=config.peak_concurrency,
    )


@dataclass(frozen=True, slots=True)
class MixedResult:
    experiment: str
    seeds: tuple[int, ...]
    runs: dict[str, tuple[MixedMetrics, ...]]

    def summary(self, label: str) -> dict[str, float]:
        """Means over seeds (violations summed: the aim is 0 in every run)."""
        runs = self.runs[label]
        finite = [r.cost_per_finished_job for r in runs if math.isfinite(r.cost_per_finished_job)]
        return {
            "cost_per_finished_job": statistics.fmean(finite) if finite else math.inf,
            "serving_floor_violations": float(sum(r.serving_floor_violations for r in runs)),
            "gpu_idle_share": statistics.fmean(r.gpu_idle_share for r in runs),
            "jobs_finished": statistics.fmean(r.jobs_finished for r in runs),
            "jobs": statistics.fmean(r.jobs for r in runs),
            "job_hours_mean": statistics.fmean(r.job_hours_mean for r in runs),
            "preemptions": statistics.fmean(r.preemptions for r in runs),
            "gpu_hours_lost": statistics.fmean(r.gpu_hours_lost for r in runs),
            "unplaceable_starts": statistics.fmean(r.unplaceable_starts for r in runs),
            "batch_spend": statistics.fmean(r.batch_spend for r in runs),
            "serving_spend": statistics.fmean(r.serving_spend for r in runs),
            "cluster_cost": statistics.fmean(r.cluster_cost for r in runs),
        }


def run_mixed(
    policies: Sequence[tuple[str, Policy]],
    *,
    seeds: int = 3,
    first_seed: int = 42,
    trace_pods: Sequence[TracePod] = (),
    config: MixedConfig = MixedConfig(),
) -> MixedResult:
    """Every policy over the same seeds: the same serving day, jobs and trace pods."""
    if seeds < 1:
        raise ValueError("seeds must be at least 1")
    nodes = priced_cluster()
    seed_list = tuple(range(first_seed, first_seed + seeds))
    runs: dict[str, list[MixedMetrics]] = {label: [] for label, _ in policies}
    for seed in seed_list:
        serving = serving_for(seed, config)
        jobs = poisson_sharded_jobs(seed, config) + trace_batch_jobs(trace_pods, seed, config)
        for label, policy in policies:
            runs[label].append(
                simulate_mixed(nodes, serving, jobs, policy, seed=seed, config=config)
            )
    with_trace = (
        f", {config.trace_pods} best-effort openb pods" if trace_pods and config.trace_pods else ""
    )
    experiment = (
        f"jobs and serving: {config.horizon_s / 3600:.0f} h on {len(nodes)} priced nodes, "
        f"{config.endpoints} diurnal endpoints (KPA), Poisson jobs {config.job_rate_per_h:g}/h"
        f"{with_trace}; core.jobqueue.decide (core.admission) + core.placement + "
        "core.preemption"
    )
    return MixedResult(experiment, seed_list, {k: tuple(v) for k, v in runs.items()})
