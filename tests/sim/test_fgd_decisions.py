"""FGD made fast must decide exactly as the plain formula, scored by the artifact's rule.

``_reference_fragmentation`` is the direct (row x shape) evaluation that
``core.fragmentation.fragmentation`` replaced with a dominance table; ``_reference_fgd`` is
the scoring it fed. Both stay here, as the yardstick for the fast path.
"""

from __future__ import annotations

import random

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
from modelplane.core.placement import PlacementRequest, PlacementState, place
from modelplane.sim.inflation import inflate
from modelplane.sim.trace import read_nodes, read_pods
from modelplane.spec.policy import PlacementPolicy, PlacementStrategy

from .test_simulator import _traces

FloatArray = npt.NDArray[np.float64]


def _reference_fragmentation(
    cpu: IntArray,
    mem: IntArray,
    gpu: IntArray,
    model: IntArray,
    shapes: TaskDistribution,
    mask: npt.NDArray[np.bool_],
) -> FloatArray:
    total = gpu.sum(axis=1)
    short = gpu[:, :, None] < shapes.group_milli[None, None, :]
    frag_by_group = (gpu[:, :, None] * short).sum(axis=1)
    fits_by_group = (~short).sum(axis=1) >= shapes.group_count[None, :]
    feasible = (
        (cpu[:, None] >= shapes.cpu[None, :])
        & (mem[:, None] >= shapes.mem[None, :])
        & mask[model]
        & fits_by_group[:, shapes.group]
        & (shapes.gpus > 0)[None, :]
    )
    frag = np.where(feasible, frag_by_group[:, shapes.group], total[:, None])
    out: FloatArray = frag @ shapes.weight
    return out


def _reference_fgd(cluster: ClusterSnapshot, demand: Demand, shapes: TaskDistribution) -> Binding:
    candidates = np.flatnonzero(cluster.fits(demand))
    if demand.gpus != 1:
        at, slots = candidates, np.zeros(candidates.size, dtype=np.int64)
    else:
        free = cluster.gpu_free[candidates]
        order = np.argsort(free, axis=1, kind="stable")
        sorted_free = np.take_along_axis(free, order, axis=1)
        first = np.ones_like(free, dtype=bool)
        first[:, 1:] = sorted_free[:, 1:] != sorted_free[:, :-1]
        keep = first & np.take_along_axis(free >= demand.gpu_milli, order, axis=1)
        rows, cols = np.nonzero(keep)
        at, slots = candidates[rows], order[rows, cols]
    gpu = cluster.gpu_free[at].copy()
    if demand.gpus == 1:
        gpu[np.arange(at.size), slots] -= demand.gpu_milli
    elif demand.gpus > 1:
        full = gpu >= GPU_MILLI
        gpu[full & (np.cumsum(full, axis=1) <= demand.gpus)] = 0
    model = cluster.model_idx[at]
    mask = shapes.model_mask(cluster.models)
    after = _reference_fragmentation(
        cluster.cpu_free[at] - demand.cpu_milli,
        cluster.mem_free[at] - demand.memory_mib,
        gpu,
        model,
        shapes,
        mask,
    )
    before = _reference_fragmentation(
        cluster.cpu_free[at], cluster.mem_free[at], cluster.gpu_free[at], model, shapes, mask
    )
    # The artifact's rule: whole points int64(sigmoid(-added / 1000) * 100), the highest
    # node wins, a tie goes to the node whose name sorts first; on the node, the lowest GPU
    # index among its best-scoring options.
    points = np.floor(100.0 / (1.0 + np.exp((after - before) / 1000.0)))
    top = points.max()
    names = [cluster.nodes[int(n)].name for n in at[points == top]]
    node = cluster.index[min(names)]
    if demand.gpus == 1:
        mine = (at == node) & (points == top)
        return Binding(node, (int(slots[mine].min()),), demand.gpu_milli)
    whole_slots = tuple(int(s) for s in np.flatnonzero(cluster.gpu_free[node] >= GPU_MILLI))
    return Binding(node, whole_slots[: demand.gpus], demand.gpu_milli)


def _replay_both(nodes: list[Node], demands: list[Demand], seed: int, limit: int) -> int:
    """Place the inflated stream with both; returns how many decisions were compared."""
    workloads = [Workload(f"w{i}", d) for i, d in enumerate(demands)]
    shapes = TaskDistribution.from_demands(demands)
    cluster = ClusterSnapshot.build(nodes)
    config = PlacementPolicy(strategy=PlacementStrategy.FGD)
    compared = 0
    for workload in list(inflate(workloads, cluster.gpu_capacity, seed, 1.3))[:limit]:
        decision, _ = place(
            PlacementRequest(cluster, workload, shapes), config, 0.0, PlacementState()
        )
        if decision.binding is None:
            assert not cluster.fits(workload.demand).any()
            continue
        assert decision.binding == _reference_fgd(cluster, workload.demand, shapes)
        cluster = cluster.bind(workload.demand, decision.binding)
        compared += 1
    return compared


def _random_demands(rng: random.Random, count: int) -> list[Demand]:
    out = []
    for _ in range(count):
        gpus = rng.choice((0, 1, 1, 1, 2, 4, 8))
        milli = rng.choice((100, 250, 500, 700, 1000)) if gpus == 1 else (1000 if gpus else 0)
        models = (
            frozenset(rng.sample(("T4", "A10", "V100"), rng.randint(0, 2))) if gpus else frozenset()
        )
        out.append(
            Demand(
                rng.choice((1000, 4000, 8000, 16000)),
                rng.choice((2048, 8192, 65536)),
                gpus,
                milli,
                models,
            )
        )
    return out


def test_fast_fragmentation_equals_the_formula_on_random_states() -> None:
    rng = random.Random(7)
    shapes = TaskDistribution.from_demands(_random_demands(rng, 300))
    models = ("", "A10", "T4", "V100")
    mask = shapes.model_mask(models)
    rows = 500
    gen = np.random.default_rng(7)
    gpu = gen.choice([0, 100, 300, 500, 750, 1000], size=(rows, 8)).astype(np.int64)
    cpu = gen.integers(-2000, 64_000, rows).astype(np.int64)
    mem = gen.integers(0, 262_144, rows).astype(np.int64)
    model = gen.integers(0, 4, rows).astype(np.int64)
    fast = fragmentation(cpu, mem, gpu, model, shapes=shapes, mask=mask)
    assert np.allclose(
        fast, _reference_fragmentation(cpu, mem, gpu, model, shapes, mask), atol=1e-9
    )


def test_fgd_decides_as_the_formula_on_a_mixed_cluster() -> None:
    nodes = [
        Node(
            f"n{i}",
            32_000 + 32_000 * (i % 3),
            262_144,
            ("T4", "A10", "V100")[i % 3],
            (1, 2, 4, 8)[i % 4],
        )
        for i in range(40)
    ]
    demands = _random_demands(random.Random(3), 120)
    assert _replay_both(nodes, demands, seed=5, limit=400) > 60


def test_fgd_decides_as_the_formula_on_the_openb_trace() -> None:
    traces = _traces()
    nodes = read_nodes(traces / "alibaba-gpu-v2023-openb_node_list_gpu_node.csv")
    pods = read_pods(traces / "alibaba-gpu-v2023-openb_pod_list_gpuspec33.csv")
    demands = [p.workload.demand for p in pods]
    assert _replay_both(nodes, demands, seed=42, limit=60) > 50
