"""Placement: choose a node, and GPUs on it, for one workload.

``place(request, config, now, state) -> (Placement, PlacementState)`` scores every node at once
over the snapshot's arrays. Strategies: least-allocated (spread, Kubernetes' default),
most-allocated (best-fit, pack), random (seeded), DRF (spread, with the queue ordered by
dominant share: see :func:`queue_order`) and FGD, after Weng et al., "Beware of
Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation Gradient Descent"
(USENIX ATC '23): a node's fragmentation is the GPU capacity that the expected mix of
tasks could not use there, and FGD picks the node and GPU whose fragmentation grows least,
scored and tie-broken as the paper's artifact does. The artifact's baselines are here too:
best-fit, packing, clustering and dot-product (see ``_ARTIFACT_SCORES``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelplane.core.cluster import (
    GPU_MILLI,
    Binding,
    ClusterSnapshot,
    Demand,
    IntArray,
    Node,
    Workload,
)
from modelplane.core.fragmentation import TaskDistribution, fragmentation
from modelplane.spec.policy import PlacementPolicy, PlacementStrategy, Policy

__all__ = [
    "Placement",
    "PlacementRequest",
    "PlacementState",
    "dominant_share",
    "choose_slots",
    "explain_unfit",
    "fgd_score",
    "gpu_class",
    "place",
    "queue_order",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """The snapshot ``place`` decides over; ``shapes`` is the expected task mix for FGD."""

    cluster: ClusterSnapshot
    workload: Workload
    shapes: TaskDistribution | None = None
    node_classes: Sequence[frozenset[str]] | None = None
    """Per node, the GPU request classes (:func:`gpu_class`) of the work on it, for the
    clustering strategy; ``None`` infers them from the GPUs' state (see
    :func:`_inferred_classes`)."""


@dataclass(frozen=True, slots=True)
class PlacementState:
    """Random draws taken so far: with the seed, this is the whole generator state."""

    draws: int = 0


@dataclass(frozen=True, slots=True)
class Placement:
    workload: str
    binding: Binding | None
    node: str | None
    reason: str
    score: float = 0.0

    @property
    def placed(self) -> bool:
        return self.binding is not None


def place(
    request: PlacementRequest, config: PlacementPolicy, now: float, state: PlacementState
) -> tuple[Placement, PlacementState]:
    """Choose where ``request.workload`` goes, or say why it cannot go anywhere."""
    del now  # placement is timeless; kept for the shape every decision shares
    cluster, demand = request.cluster, request.workload.demand
    candidates = np.flatnonzero(cluster.fits(demand))
    name = request.workload.name
    if candidates.size == 0:
        return Placement(name, None, None, explain_unfit(cluster, demand)), state
    strategy = config.strategy
    if strategy is PlacementStrategy.RANDOM:
        rng = random.Random(f"{config.seed}:{state.draws}")
        node = int(candidates[rng.randrange(candidates.size)])
        binding = Binding(node, _random_slots(cluster, demand, node, rng), demand.gpu_milli)
        state = PlacementState(state.draws + 1)
        score = 0.0
    elif strategy in _ARTIFACT_SCORES:
        binding, score = _artifact_pick(request, candidates, strategy)
    elif strategy is PlacementStrategy.FGD:
        shapes = request.shapes or TaskDistribution.from_demands([demand])
        binding, score = _fgd(cluster, demand, candidates, shapes)
    else:
        pack = strategy is PlacementStrategy.MOST_ALLOCATED
        binding, score = _by_allocation(cluster, demand, candidates, pack)
    node_name = cluster.nodes[binding.node].name
    where = f"{node_name} gpus {list(binding.gpus)}" if binding.gpus else node_name
    reason = f"placed on {where} by {strategy.value} (score {score:.3g})"
    return Placement(name, binding, node_name, reason, score), state


def _whole_slots(free: IntArray, count: int) -> tuple[int, ...]:
    return tuple(int(s) for s in np.flatnonzero(free >= GPU_MILLI)[:count])


def _random_slots(
    cluster: ClusterSnapshot, demand: Demand, node: int, rng: random.Random
) -> tuple[int, ...]:
    if not demand.gpus:
        return ()
    fitting = [int(s) for s in np.flatnonzero(cluster.gpu_free[node] >= demand.gpu_milli)]
    return tuple(sorted(rng.sample(fitting, demand.gpus)))


def _by_allocation(
    cluster: ClusterSnapshot, demand: Demand, candidates: IntArray, pack: bool
) -> tuple[Binding, float]:
    """Mean free share after placing, over CPU, memory and (where present) GPU."""
    cpu = (cluster.cpu_free[candidates] - demand.cpu_milli) / cluster.cpu_cap[candidates]
    mem = (cluster.mem_free[candidates] - demand.memory_mib) / cluster.mem_cap[candidates]
    gpu_cap = cluster.gpu_cap[candidates]
    has_gpu = gpu_cap > 0
    gpu_free = cluster.gpu_free[candidates].sum(axis=1) - demand.gpu_total
    gpu = np.where(has_gpu, gpu_free / np.maximum(gpu_cap, 1), 0.0)
    free_share: FloatArray = (cpu + mem + gpu) / (2.0 + has_gpu)
    pick = int(np.argmin(free_share)) if pack else int(np.argmax(free_share))
    node = int(candidates[pick])
    return Binding(node, _slots(cluster, demand, node, pack), demand.gpu_milli), float(
        free_share[pick]
    )


def _slots(cluster: ClusterSnapshot, demand: Demand, node: int, pack: bool) -> tuple[int, ...]:
    return choose_slots(cluster.gpu_free[node], demand, pack)


def choose_slots(free: IntArray, demand: Demand, pack: bool = True) -> tuple[int, ...]:
    """GPU slots on one node for ``demand``, given that node's free milli-GPU per slot."""
    if demand.gpus != 1 or demand.gpu_milli >= GPU_MILLI:
        return _whole_slots(free, demand.gpus)
    fitting = np.flatnonzero(free >= demand.gpu_milli)
    # Best-fit shares the fullest GPU that still fits; spreading takes the emptiest.
    order = np.argsort(free[fitting], kind="stable")
    return (int(fitting[order[0] if pack else order[-1]]),)


@dataclass(frozen=True, slots=True)
class _NodeScores:
    """FGD's per-node result for one demand on one cluster state: the best option's score
    (:func:`fgd_score`; -inf where none fits) and the lowest GPU slot with that score. A
    node's entry depends only on that node's row, so rows unchanged since the last decision
    for the same demand are reused (snapshot arrays are immutable)."""

    nodes: tuple[object, ...]
    cpu: IntArray
    mem: IntArray
    gpu: IntArray
    best: FloatArray
    slot: IntArray


_MEMO_SIZE = 256
"""Demands whose node scores are kept, least recently used dropped first (each entry holds
one cluster state: about 0.1 MB on the 1,213-node openb cluster)."""


def _fgd(
    cluster: ClusterSnapshot,
    demand: Demand,
    candidates: IntArray,
    shapes: TaskDistribution,
) -> tuple[Binding, float]:
    """Every (node, GPU) option is scored as the ATC '23 artifact scores it (see
    :func:`fgd_score`); the highest wins, and a tie goes to the node whose name sorts
    first, as in the artifact's ``selectHost`` (it replaced kube-scheduler's random draw
    "for reproducibility"). Whole points make ties common: an option adding no
    fragmentation scores 50, one adding 1 to about 40 milli-GPU scores 49, and so on."""
    best, slot = _node_scores(cluster, demand, candidates, shapes)
    scores = best[candidates]
    tied = candidates[scores == scores.max()]
    node = int(tied[np.argmin(_name_rank(cluster.nodes)[tied])])
    if demand.gpus == 1:
        chosen: tuple[int, ...] = (int(slot[node]),)
    else:
        chosen = _whole_slots(cluster.gpu_free[node], demand.gpus)
    return Binding(node, chosen, demand.gpu_milli), float(best[node])


def _node_scores(
    cluster: ClusterSnapshot, demand: Demand, candidates: IntArray, shapes: TaskDistribution
) -> tuple[FloatArray, IntArray]:
    key = ("fgd", id(cluster.nodes), demand)
    memo = shapes.memo.get(key)
    if isinstance(memo, _NodeScores) and memo.nodes is cluster.nodes:
        changed = (
            (memo.cpu != cluster.cpu_free)
            | (memo.mem != cluster.mem_free)
            | (memo.gpu != cluster.gpu_free).any(axis=1)
        )
        best, slot = memo.best.copy(), memo.slot.copy()
        best[changed] = -np.inf
        fresh = candidates[changed[candidates]]
        shapes.memo.move_to_end(key)
    else:
        best = np.full(len(cluster.nodes), -np.inf)
        slot = np.zeros(len(cluster.nodes), dtype=np.int64)
        fresh = candidates
    if fresh.size:
        _score_nodes(cluster, demand, fresh, shapes, best, slot)
    shapes.memo[key] = _NodeScores(
        cluster.nodes, cluster.cpu_free, cluster.mem_free, cluster.gpu_free, best, slot
    )
    while len(shapes.memo) > _MEMO_SIZE:
        shapes.memo.popitem(last=False)
    return best, slot


def _score_nodes(
    cluster: ClusterSnapshot,
    demand: Demand,
    candidates: IntArray,
    shapes: TaskDistribution,
    best: FloatArray,
    slot: IntArray,
) -> None:
    """Fill ``best`` and ``slot`` for ``candidates`` (ascending node indices)."""
    nodes, slots, rows = _options(cluster, demand, candidates)
    gpu = cluster.gpu_free[nodes]
    if demand.gpus == 1:
        gpu[np.arange(nodes.size), slots] -= demand.gpu_milli
    elif demand.gpus > 1:
        gpu = _take_whole(gpu, demand.gpus)
    # One call scores every candidate node as it is (each node once, however many options
    # it has) and every option after placing: per-call overhead dominates at this size.
    count = candidates.size
    scores = fragmentation(
        np.concatenate((cluster.cpu_free[candidates], cluster.cpu_free[nodes] - demand.cpu_milli)),
        np.concatenate((cluster.mem_free[candidates], cluster.mem_free[nodes] - demand.memory_mib)),
        np.concatenate((cluster.gpu_free[candidates], gpu)),
        np.concatenate((cluster.model_idx[candidates], cluster.model_idx[nodes])),
        shapes=shapes,
        mask=shapes.model_mask(cluster.models),
    )
    points = fgd_score(scores[count:] - scores[:count][rows])
    top = np.full(count, -np.inf)
    np.maximum.at(top, rows, points)
    # Within a node, the lowest GPU index among its best options: the artifact walks the
    # GPUs in index order and keeps the first strictly better one.
    good = points == top[rows]
    lowest = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(lowest, rows[good], slots[good])
    best[candidates] = top
    slot[candidates] = lowest


_NAME_RANKS: dict[int, tuple[tuple[Node, ...], IntArray]] = {}


def _name_rank(nodes: tuple[Node, ...]) -> IntArray:
    """Each node's position in the nodes sorted by name (kept per node tuple: snapshots
    share theirs, and hashing 1,213 nodes per decision would cost more than FGD)."""
    memo = _NAME_RANKS.get(id(nodes))
    if memo is not None and memo[0] is nodes:
        return memo[1]
    rank = np.empty(len(nodes), dtype=np.int64)
    rank[np.argsort([n.name for n in nodes], kind="stable")] = np.arange(len(nodes))
    if len(_NAME_RANKS) >= 8:
        _NAME_RANKS.clear()
    _NAME_RANKS[id(nodes)] = (nodes, rank)
    return rank


def fgd_score(added: FloatArray) -> FloatArray:
    """The ATC '23 artifact's FGD node score for options adding ``added`` milli-GPU of
    fragmentation: ``int64(sigmoid(-added / 1000) * 100)``, whole points 0..100, higher
    better (hkust-adsl/kubernetes-scheduler-simulator, plugin/fgd_score.go)."""
    points: FloatArray = np.floor(100.0 / (1.0 + np.exp(added / 1000.0)))
    return points


def _options(
    cluster: ClusterSnapshot, demand: Demand, candidates: IntArray
) -> tuple[IntArray, IntArray, IntArray]:
    """(node, slot, index in candidates) of the options worth scoring.

    GPUs with equal free capacity on one node are interchangeable: only the first counts.
    """
    if demand.gpus != 1:
        every = np.arange(candidates.size)
        return candidates, np.zeros(candidates.size, dtype=np.int64), every
    free = cluster.gpu_free[candidates]
    order = np.argsort(free, axis=1, kind="stable")
    sorted_free = free[np.arange(free.shape[0])[:, None], order]
    keep = sorted_free >= demand.gpu_milli
    keep[:, 1:] &= sorted_free[:, 1:] != sorted_free[:, :-1]
    rows, cols = np.nonzero(keep)
    return candidates[rows], order[rows, cols], rows


def _take_whole(gpu: IntArray, count: int) -> IntArray:
    """Zero the first ``count`` fully free slots of every row."""
    full = gpu >= GPU_MILLI
    rank = np.cumsum(full, axis=1)
    gpu[full & (rank <= count)] = 0
    return gpu


# The ATC '23 artifact's baselines (hkust-adsl/kubernetes-scheduler-simulator,
# pkg/simulator/plugin): each scores a node in whole points (higher better), the highest
# wins, a tie goes to the node whose name sorts first (the artifact's selectHost), and a
# shared GPU is the tightest that fits ("best" GPU selection, lowest index on a tie).

MAX_SPEC_CPU = 128_000
"""The artifact's largest node's CPU (milli), the scale of BestFit and DotProd."""
MAX_SPEC_GPU = 8 * GPU_MILLI
"""The artifact's largest node's GPU (milli)."""


def gpu_class(demand: Demand) -> str:
    """The artifact's GPU affinity tag of a request: ``no-gpu``, ``share-gpu`` or ``N-gpu``."""
    if not demand.gpus:
        return "no-gpu"
    return "share-gpu" if demand.gpu_milli < GPU_MILLI else f"{demand.gpus}-gpu"


def _artifact_pick(
    request: PlacementRequest, candidates: IntArray, strategy: PlacementStrategy
) -> tuple[Binding, float]:
    cluster, demand = request.cluster, request.workload.demand
    points = _ARTIFACT_SCORES[strategy](request, candidates)
    tied = candidates[points == points.max()]
    node = int(tied[np.argmin(_name_rank(cluster.nodes)[tied])])
    chosen = choose_slots(cluster.gpu_free[node], demand, pack=True)
    return Binding(node, chosen, demand.gpu_milli), float(points[candidates == node][0])


def _best_fit_points(request: PlacementRequest, candidates: IntArray) -> FloatArray:
    """Free CPU and GPU left after placing, each over the largest node's, half weight each;
    less is better. Then min-max normalised to 0..100 in integers, as the artifact does."""
    cluster, demand = request.cluster, request.workload.demand
    cpu_left = (cluster.cpu_free[candidates] - demand.cpu_milli) / MAX_SPEC_CPU * 0.5
    gpu_total = cluster.gpu_free[candidates].sum(axis=1)
    gpu_left = (gpu_total - demand.gpu_total) / MAX_SPEC_GPU * 0.5
    raw = np.trunc((1.0 - (cpu_left + gpu_left)) * 100.0).astype(np.int64)
    low, high = int(raw.min()), int(raw.max())
    if high == low:
        return np.zeros(candidates.size)
    # Integer division, as Go's: normalising can merge neighbouring scores into ties.
    out: FloatArray = ((raw - low) * 100 // (high - low)).astype(np.float64)
    return out


def _packing_points(request: PlacementRequest, candidates: IntArray) -> FloatArray:
    """Shared GPUs first (50..100, fuller better), then fully free GPUs of a used node
    (33..50, fewer better), then an empty node (<= 33, smaller better); 0 without GPUs."""
    cluster, demand = request.cluster, request.workload.demand
    if not demand.gpus:
        return np.zeros(candidates.size)
    free = cluster.gpu_free[candidates]
    count = cluster.gpu_cap[candidates] // GPU_MILLI
    fully_free = (free == GPU_MILLI).sum(axis=1)
    empty_node = np.maximum(33 - fully_free, fully_free)
    # A share takes the tightest GPU that fits; whole requests take fully free GPUs only
    # (slots past a node's GPU count hold 0 free, so they never fit).
    tightest = np.where(free >= demand.gpu_milli, free, GPU_MILLI + 1).min(axis=1)
    shared = (demand.gpus == 1) & (tightest < GPU_MILLI)
    on_shared = np.maximum(100 - (tightest * 100 // GPU_MILLI) // 10, 50)
    on_whole = np.maximum(50 - demand.gpus, 33)
    used_node = np.where(shared, on_shared, on_whole)
    out: FloatArray = np.where(fully_free == count, empty_node, used_node).astype(np.float64)
    return out


def _inferred_classes(cluster: ClusterSnapshot, nodes: IntArray) -> list[frozenset[str]]:
    """Without a record of the work on each node: a partly used GPU means shared work,
    a fully used one whole-GPU work (of unknown count)."""
    free = cluster.gpu_free[nodes]
    real = np.arange(free.shape[1])[None, :] < (cluster.gpu_cap[nodes] // GPU_MILLI)[:, None]
    partly = [bool(x) for x in np.any(real & (free > 0) & (free < GPU_MILLI), axis=1)]
    fully = [bool(x) for x in np.any(real & (free == 0), axis=1)]
    table = {
        (False, False): frozenset[str](),
        (True, False): frozenset({"share-gpu"}),
        (False, True): frozenset({"whole-gpu"}),
        (True, True): frozenset({"share-gpu", "whole-gpu"}),
    }
    return [table[(p, f)] for p, f in zip(partly, fully, strict=True)]


def _clustering_points(request: PlacementRequest, candidates: IntArray) -> FloatArray:
    """Nodes running only this kind of GPU request (75..100), then mixed nodes holding it
    (50..75), then idle nodes (25..50), then nodes of other kinds (0..25); within a band,
    less GPU left is better. 0 for requests without GPUs."""
    cluster, demand = request.cluster, request.workload.demand
    if not demand.gpus:
        return np.zeros(candidates.size)
    wanted = gpu_class(demand)
    if request.node_classes is not None:
        classes = [request.node_classes[int(n)] for n in candidates]
    else:
        classes = _inferred_classes(cluster, candidates)
    band = np.array(
        [
            (75 if len(held) == 1 else 50) if wanted in held else (0 if held else 25)
            for held in classes
        ],
        dtype=np.int64,
    )
    left = cluster.gpu_free[candidates].sum(axis=1)
    out: FloatArray = (25 * (MAX_SPEC_GPU - left) // MAX_SPEC_GPU + band).astype(np.float64)
    return out


def _dot_product_points(request: PlacementRequest, candidates: IntArray) -> FloatArray:
    """Tetris: (free CPU, free GPU) . (CPU, GPU) requested, each over the largest node's,
    halved; a smaller product is better."""
    cluster, demand = request.cluster, request.workload.demand
    node_cpu = cluster.cpu_free[candidates] / MAX_SPEC_CPU
    node_gpu = cluster.gpu_free[candidates].sum(axis=1) / MAX_SPEC_GPU
    dot = node_cpu * (demand.cpu_milli / MAX_SPEC_CPU) + node_gpu * (
        demand.gpu_total / MAX_SPEC_GPU
    )
    out: FloatArray = np.trunc(100.0 * (1.0 - dot / 2.0))
    return out


_ARTIFACT_SCORES = {
    PlacementStrategy.BEST_FIT: _best_fit_points,
    PlacementStrategy.PACKING: _packing_points,
    PlacementStrategy.CLUSTERING: _clustering_points,
    PlacementStrategy.DOT_PRODUCT: _dot_product_points,
}


def explain_unfit(cluster: ClusterSnapshot, demand: Demand) -> str:
    """One line: how many nodes fail on which resource."""
    if not cluster.nodes:
        return "no nodes in the cluster"
    model = cluster.model_ok(demand)
    lacks = {
        "GPU model": int((~model).sum()),
        "cpu": int((cluster.cpu_free < demand.cpu_milli).sum()),
        "memory": int((cluster.mem_free < demand.memory_mib).sum()),
    }
    if demand.gpus:
        usable = (cluster.gpu_free >= demand.gpu_milli).sum(axis=1)
        lacks["gpu"] = int((model & (usable < demand.gpus)).sum())
    parts = ", ".join(f"{count} lack {what}" for what, count in lacks.items() if count)
    return f"no node fits ({len(cluster.nodes)} nodes: {parts})"


def dominant_share(usage: Mapping[str, int], capacity: Mapping[str, int]) -> float:
    """DRF's dominant share: the largest fraction of any cluster resource a team holds."""
    shares = [usage.get(r, 0) / total for r, total in capacity.items() if total > 0]
    return max(shares, default=0.0)


def queue_order(
    pending: Iterable[Workload],
    policy: Policy,
    usage: Mapping[str, Mapping[str, int]] | None = None,
    capacity: Mapping[str, int] | None = None,
) -> Sequence[Workload]:
    """Higher tiers first; within a tier FIFO, or lowest dominant share first under DRF."""
    priority = {t.name: t.priority for t in policy.tiers}
    drf = policy.placement.strategy is PlacementStrategy.DRF and usage is not None
    shares: dict[str, float] = {}
    if drf and usage is not None:
        shares = {team: dominant_share(u, capacity or {}) for team, u in usage.items()}

    def key(w: Workload) -> tuple[int, float, float, str]:
        share = shares.get(w.team, 0.0) if drf else 0.0
        return (-priority.get(w.tier, 0), share, w.submitted_at, w.name)

    return sorted(pending, key=key)
