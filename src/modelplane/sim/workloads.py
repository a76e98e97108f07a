"""Arrival streams for the simulator: the inflated openb trace and synthetic traces.

Synthetic traces are seeded and deterministic: Poisson batch-job arrivals with exponential
run times, and diurnal serving load turned into replica arrivals by the production KPA
autoscaler (:func:`modelplane.core.autoscale.autoscale`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from modelplane.core.autoscale import ScaleConfig, ScaleSnapshot, ScaleState, autoscale
from modelplane.core.cluster import Demand, Node, Workload, WorkloadKind
from modelplane.sim.engine import Arrival
from modelplane.sim.inflation import inflate

__all__ = ["diurnal_serving", "openb_arrivals", "poisson_jobs", "synthetic_cluster"]


def openb_arrivals(
    workloads: Sequence[Workload],
    gpu_capacity: int,
    seed: int,
    *,
    target: float = 1.3,
    interval_s: float = 1.0,
) -> list[Arrival]:
    """The paper's inflation: one pod per ``interval_s``, never finishing."""
    return [
        Arrival(at=i * interval_s, workload=w)
        for i, w in enumerate(inflate(workloads, gpu_capacity, seed, target))
    ]


def synthetic_cluster(gpu_nodes: int = 8, cpu_nodes: int = 2) -> list[Node]:
    """A small mixed cluster: 8-GPU A100 nodes, 2-GPU T4 nodes and CPU-only nodes."""
    nodes = []
    for i in range(gpu_nodes):
        big = i % 2 == 0
        nodes.append(
            Node(
                name=f"gpu-{i}",
                cpu_milli=96_000 if big else 32_000,
                memory_mib=786_432 if big else 131_072,
                gpu_model="A100" if big else "T4",
                gpu_count=8 if big else 2,
            )
        )
    nodes += [Node(f"cpu-{i}", cpu_milli=64_000, memory_mib=262_144) for i in range(cpu_nodes)]
    return nodes


_JOB_SHAPES = (
    Demand(4000, 16_384, 1, 1000),
    Demand(2000, 8192, 1, 500),
    Demand(2000, 8192, 1, 250),
    Demand(16_000, 65_536, 4, 1000),
    Demand(8000, 32_768, 0, 0),
)


def poisson_jobs(
    seed: int,
    *,
    rate_per_s: float = 0.05,
    horizon_s: float = 7200.0,
    mean_duration_s: float = 900.0,
    teams: int = 4,
) -> list[Arrival]:
    """Batch jobs arriving as a Poisson process, run times exponential."""
    rng = random.Random(f"poisson:{seed}")
    out: list[Arrival] = []
    now, i = 0.0, 0
    while True:
        now += rng.expovariate(rate_per_s)
        if now >= horizon_s:
            return out
        workload = Workload(
            name=f"job-{i}",
            demand=rng.choice(_JOB_SHAPES),
            team=f"team-{rng.randrange(teams)}",
            tier="batch",
            kind=WorkloadKind.JOB,
            submitted_at=now,
        )
        out.append(Arrival(now, workload, rng.expovariate(1.0 / mean_duration_s)))
        i += 1


@dataclass(frozen=True, slots=True)
class _Curve:
    """One endpoint's day: load = peak x (0.55 + 0.45 sin), +-10% noise."""

    endpoint: str
    tier: str
    demand: Demand
    phase: float
    horizon_s: float
    period_s: float
    step_s: float
    peak: float


def diurnal_serving(
    seed: int,
    *,
    endpoints: int = 6,
    horizon_s: float = 7200.0,
    period_s: float = 3600.0,
    step_s: float = 30.0,
    peak_concurrency: float = 60.0,
) -> list[Arrival]:
    """Replicas that the KPA autoscaler asks for as each endpoint's load follows a day curve."""
    rng = random.Random(f"diurnal:{seed}")
    out: list[Arrival] = []
    for e in range(endpoints):
        tier = "critical" if e % 3 == 0 else "standard"
        curve = _Curve(
            endpoint=f"ep{e}",
            tier=tier,
            demand=Demand(2000, 8192, 1, rng.choice((250, 500, 1000))),
            phase=rng.uniform(0, period_s),
            horizon_s=horizon_s,
            period_s=period_s,
            step_s=step_s,
            peak=peak_concurrency,
        )
        config = ScaleConfig(target_concurrency=10.0, min_replicas=1 if tier == "critical" else 0)
        out += _replicas(curve, config, rng)
    return out


def _replicas(curve: _Curve, config: ScaleConfig, rng: random.Random) -> list[Arrival]:
    state, ready, t = ScaleState(), 0, 0.0
    started: list[float] = []
    out: list[Arrival] = []
    while t < curve.horizon_s:
        wave = math.sin(2 * math.pi * (t + curve.phase) / curve.period_s)
        load = curve.peak * (0.55 + 0.45 * wave) * rng.uniform(0.9, 1.1)
        snapshot = ScaleSnapshot(curve.endpoint, ready, load)
        decision, state = autoscale(snapshot, config, t, state)
        while len(started) < decision.desired:
            started.append(t)
        while len(started) > decision.desired:
            begin = started.pop()
            out.append(_replica(curve, len(out), begin, t - begin))
        ready = decision.desired
        t += curve.step_s
    return out + [_replica(curve, len(out) + i, b, None) for i, b in enumerate(started)]


def _replica(curve: _Curve, n: int, at: float, duration: float | None) -> Arrival:
    workload = Workload(
        name=f"{curve.endpoint}-r{n}",
        demand=curve.demand,
        team=curve.endpoint,
        tier=curve.tier,
        kind=WorkloadKind.REPLICA,
        submitted_at=at,
    )
    return Arrival(at, workload, max(duration, 1.0) if duration is not None else None)
