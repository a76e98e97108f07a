"""The ATC '23 workload-inflation replay: fill the cluster with trace task shapes.

Creation and deletion times in the openb trace never load the cluster past ~66 GPUs, so
the paper treats it as a sample of shapes: shuffle the pods by seed, submit them one by one
(sampling again once the list runs out) until the arrived GPU demand reaches 130% of the
cluster's GPU capacity, never release anything, and plot the share of GPUs left
unallocated against the arrived workload. A pod that fits nowhere fails and is dropped.
Placement goes through :func:`modelplane.core.placement.place`, the production function.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from modelplane.core.cluster import ClusterSnapshot, Node, Workload
from modelplane.core.fragmentation import TaskDistribution, cluster_fragmentation
from modelplane.core.placement import PlacementRequest, PlacementState, place
from modelplane.spec.policy import PlacementPolicy, PlacementStrategy

__all__ = ["InflationCurve", "inflate", "replay_inflation"]


@dataclass(frozen=True, slots=True)
class InflationCurve:
    """One replay: per arrived-workload percent, what share of GPU capacity sat unallocated."""

    strategy: str
    seed: int
    arrived_pct: tuple[float, ...]
    unallocated_pct: tuple[float, ...]
    fragmentation_pct: tuple[float, ...]
    placed: int
    failed: int
    failed_by_tier: tuple[tuple[str, int], ...]
    decision_s: tuple[float, ...]

    def unallocated_at(self, arrived: float) -> float:
        """Unallocated GPU % at the first recorded point at or past ``arrived`` %."""
        for x, y in zip(self.arrived_pct, self.unallocated_pct, strict=True):
            if x >= arrived:
                return y
        return self.unallocated_pct[-1]


def inflate(
    workloads: Sequence[Workload], gpu_capacity: int, seed: int, target: float = 1.3
) -> Iterator[Workload]:
    """Shuffled trace workloads, resampled, until their GPU demand reaches ``target`` x capacity."""
    if not any(w.demand.gpu_total for w in workloads):
        raise ValueError("the trace asks for no GPU; inflation would never end")
    rng = random.Random(seed)
    arrived, round_ = 0, 0
    while True:
        order = list(workloads)
        rng.shuffle(order)
        for workload in order:
            if arrived >= target * gpu_capacity:
                return
            arrived += workload.demand.gpu_total
            yield workload if round_ == 0 else replace(workload, name=f"{workload.name}#{round_}")
        round_ += 1


def replay_inflation(
    nodes: Sequence[Node],
    workloads: Sequence[Workload],
    strategy: PlacementStrategy,
    seed: int,
    *,
    target: float = 1.3,
    step_pct: float = 1.0,
    frag_every_pct: float = 5.0,
) -> InflationCurve:
    """Replay one seed under one strategy; the task mix for FGD is the trace's own."""
    cluster = ClusterSnapshot.build(nodes)
    capacity = cluster.gpu_capacity
    shapes = TaskDistribution.from_demands(w.demand for w in workloads)
    config = PlacementPolicy(strategy=strategy, seed=seed)
    state = PlacementState()
    xs: list[float] = []
    ys: list[float] = []
    frags: list[float] = []
    latencies: list[float] = []
    failed: dict[str, int] = {}
    arrived = placed = 0
    next_mark, next_frag = 0.0, 0.0
    for workload in inflate(workloads, capacity, seed, target):
        started = time.perf_counter()
        decision, state = place(PlacementRequest(cluster, workload, shapes), config, 0.0, state)
        latencies.append(time.perf_counter() - started)
        if decision.binding is None:
            failed[workload.tier] = failed.get(workload.tier, 0) + 1
        else:
            cluster = cluster.bind(workload.demand, decision.binding)
            placed += 1
        arrived += workload.demand.gpu_total
        pct = 100.0 * arrived / capacity
        if pct >= next_mark:
            xs.append(pct)
            ys.append(100.0 * (capacity - cluster.gpu_allocated) / capacity)
            if pct >= next_frag:
                frags.append(_frag_pct(cluster, shapes))
                next_frag += frag_every_pct
            else:
                frags.append(frags[-1] if frags else 0.0)
            next_mark = pct + step_pct
    return InflationCurve(
        strategy=strategy.value,
        seed=seed,
        arrived_pct=tuple(xs),
        unallocated_pct=tuple(ys),
        fragmentation_pct=tuple(frags),
        placed=placed,
        failed=sum(failed.values()),
        failed_by_tier=tuple(sorted(failed.items())),
        decision_s=tuple(latencies),
    )


def _frag_pct(cluster: ClusterSnapshot, shapes: TaskDistribution) -> float:
    frag = cluster_fragmentation(
        cluster.cpu_free,
        cluster.mem_free,
        cluster.gpu_free,
        cluster.model_idx,
        shapes=shapes,
        models=cluster.models,
    )
    return 100.0 * frag / cluster.gpu_capacity
