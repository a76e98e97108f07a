"""The ATC '23 workload-inflation replay: fill the cluster with trace task shapes.

Creation and deletion times in the openb trace never load the cluster past ~66 GPUs, so
the paper treats it as a sample of shapes: shuffle the pods by seed, submit them one by one
(sampling again once the list runs out) until the arrived GPU demand reaches 130% of the
cluster's GPU capacity, never release anything, and plot the share of GPUs left
unallocated against the arrived workload. A pod that fits nowhere fails and is dropped, but
its demand counts as arrived. Figures follow the artifact's accounting
(:mod:`modelplane.sim.accounting`). Placement goes through
:func:`modelplane.core.placement.place`, the production function.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from modelplane.core.cluster import ClusterSnapshot, Demand, Node, Workload
from modelplane.core.fragmentation import TaskDistribution, cluster_fragmentation
from modelplane.core.placement import PlacementRequest, PlacementState, gpu_class, place
from modelplane.sim.accounting import allocation_by_percent, unallocated_at
from modelplane.spec.policy import PlacementPolicy, PlacementStrategy

__all__ = [
    "InflationCurve",
    "artifact_node_names",
    "artifact_task_mix",
    "inflate",
    "replay_inflation",
]

TYPICAL_SHARE = 0.95
"""The artifact's ``podPopularityThreshold``: the most common shapes covering 95% of pods."""


def artifact_task_mix(demands: Iterable[Demand]) -> TaskDistribution:
    """FGD's target workload as the ATC '23 artifact builds it (``GetTypicalPods``).

    A shape there is (CPU, GPU per device, GPU count, GPU model): memory is not part of it,
    nor of a node's fragmentation. CPU-only pods count. The most frequent shapes are kept
    until they cover 95% of the pods (ties: the larger shape first), then re-weighted.
    """
    counts = Counter(replace(d, memory_mib=0) for d in demands)
    if not counts:
        raise ValueError("a task mix needs at least one pod")
    ranked = sorted(
        counts.items(),
        key=lambda kv: (kv[1], kv[0].cpu_milli, kv[0].gpu_milli, kv[0].gpus, _model(kv[0])),
        reverse=True,
    )
    total, kept, covered = sum(counts.values()), [], 0
    for shape, count in ranked:
        if covered >= TYPICAL_SHARE * total:
            break
        kept.append((shape, count))
        covered += count
    return TaskDistribution.from_demands(shape for shape, count in kept for _ in range(count))


def _model(demand: Demand) -> str:
    return ",".join(sorted(demand.gpu_models))


def artifact_node_names(nodes: Sequence[Node], seed: int) -> list[Node]:
    """The nodes renamed as the ATC '23 artifact's replay renames them, per seed.

    Before replaying, the artifact (``syncClusterResourceList`` in ``pkg/simulator``) sorts
    the nodes by name and prefixes each with its place in a seeded random permutation
    (``0421-openb-node-0007``). Every strategy there gives a tie to the name that sorts
    first, so a tie goes to a node drawn at random per seed, not to the first node of the
    trace's list. Packing and clustering tie on almost every decision (CPU-only pods score
    0 everywhere, GPU pods in a few coarse bands): with the trace's names their ties fill
    the nodes in list order, every seed alike, which left about 0.8 points more GPU
    unallocated at 100% arrived than the artifact's figures. The permutation is ours (Go's
    generator is not reproduced), drawn apart from the pod shuffle.
    """
    ordered = sorted(nodes, key=lambda n: n.name)
    places = list(range(len(ordered)))
    random.Random(f"node-names:{seed}").shuffle(places)
    # Wide enough that the prefixes sort as numbers, as the artifact's %04d does.
    width = max(4, len(str(len(ordered) - 1)))
    return [
        replace(node, name=f"{place:0{width}d}-{node.name}")
        for node, place in zip(ordered, places, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class InflationCurve:
    """One replay: per arrived-workload percent k, the share of GPUs left unallocated."""

    strategy: str
    seed: int
    arrived_pct: tuple[float, ...]
    """The k (whole percents) the curve has a point for."""
    unallocated_pct: tuple[float, ...]
    """100 - mean allocation over the arrivals whose arrived share rounds to k."""
    fragmentation_pct: tuple[float, ...]
    placed: int
    failed: int
    failed_by_tier: tuple[tuple[str, int], ...]
    decision_s: tuple[float, ...]
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    """Process CPU time of the replay: on a shared machine, steadier than wall time."""

    def unallocated_at(self, arrived: float) -> float:
        """Unallocated GPU % at ``arrived`` % (the artifact's figure at that k)."""
        curve = {
            int(x): 100.0 - y for x, y in zip(self.arrived_pct, self.unallocated_pct, strict=True)
        }
        return unallocated_at(curve, round(arrived))

    @property
    def pods_per_s(self) -> float:
        return (self.placed + self.failed) / self.elapsed_s if self.elapsed_s else 0.0


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
    frag_every_pct: float = 5.0,
    shapes: TaskDistribution | None = None,
    artifact_names: bool = True,
) -> InflationCurve:
    """Replay one seed under one strategy; FGD's task mix is every shape of the trace
    unless ``shapes`` is given (:func:`artifact_task_mix` is the artifact's). Nodes are
    renamed per seed as the artifact renames them (:func:`artifact_node_names`), which
    decides ties, unless ``artifact_names`` is False."""
    if artifact_names:
        nodes = artifact_node_names(nodes, seed)
    cluster = ClusterSnapshot.build(nodes)
    capacity = cluster.gpu_capacity
    if capacity <= 0:
        raise ValueError("the cluster has no GPU: nothing to fill")
    shapes = shapes or TaskDistribution.from_demands(w.demand for w in workloads)
    config = PlacementPolicy(strategy=strategy, seed=seed)
    state = PlacementState()
    arrived_log: list[int] = []
    used_log: list[int] = []
    frag_at: dict[int, float] = {}
    latencies: list[float] = []
    # What kind of GPU work each node runs, for the clustering strategy.
    classes: list[frozenset[str]] = [frozenset()] * len(cluster.nodes)
    failed: dict[str, int] = {}
    arrived = placed = used = 0
    next_frag = 0.0
    began, began_cpu = time.perf_counter(), time.process_time()
    for workload in inflate(workloads, capacity, seed, target):
        started = time.perf_counter()
        request = PlacementRequest(cluster, workload, shapes, classes)
        decision, state = place(request, config, 0.0, state)
        latencies.append(time.perf_counter() - started)
        if decision.binding is None:
            failed[workload.tier] = failed.get(workload.tier, 0) + 1
        else:
            cluster = cluster.bind(workload.demand, decision.binding)
            if workload.demand.gpus:
                node = decision.binding.node
                classes[node] = classes[node] | {gpu_class(workload.demand)}
            used += workload.demand.gpu_total
            placed += 1
        arrived += workload.demand.gpu_total
        arrived_log.append(arrived)
        used_log.append(used)
        pct = 100.0 * arrived / capacity
        if pct >= next_frag:
            frag_at[round(pct)] = _frag_pct(cluster, shapes)
            next_frag += frag_every_pct
    elapsed, cpu = time.perf_counter() - began, time.process_time() - began_cpu
    curve = allocation_by_percent(
        [100.0 * a / capacity for a in arrived_log], [100.0 * u / capacity for u in used_log]
    )
    ks = sorted(curve)
    frags, last = [], 0.0
    for k in ks:
        last = frag_at.get(k, last)
        frags.append(last)
    return InflationCurve(
        strategy=strategy.value,
        seed=seed,
        arrived_pct=tuple(float(k) for k in ks),
        unallocated_pct=tuple(100.0 - curve[k] for k in ks),
        fragmentation_pct=tuple(frags),
        placed=placed,
        failed=sum(failed.values()),
        failed_by_tier=tuple(sorted(failed.items())),
        decision_s=tuple(latencies),
        elapsed_s=elapsed,
        cpu_s=cpu,
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
