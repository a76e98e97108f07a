"""The artifact's task mix for FGD, and the baselines on a small replay."""

from __future__ import annotations

from modelplane.core.cluster import Demand, Node, Workload
from modelplane.sim.inflation import artifact_task_mix, replay_inflation
from modelplane.spec.policy import PlacementStrategy


def test_artifact_task_mix_keeps_the_commonest_shapes_without_memory() -> None:
    whole = Demand(8000, 32_768, 1, 1000)
    whole_more_memory = Demand(8000, 65_536, 1, 1000)  # the same shape once memory is gone
    half = Demand(4000, 16_384, 1, 500)
    cpu_only = Demand(2000, 4096)
    rare = Demand(16_000, 8192, 2, 1000)
    demands = [whole] * 50 + [whole_more_memory] * 20 + [half] * 20 + [cpu_only] * 6 + [rare] * 4
    mix = artifact_task_mix(demands)
    # 70 + 20 + 6 = 96 of 100 pods reach 95%: the 2-GPU shape (4%) is cut.
    assert sorted(zip(mix.gpus.tolist(), mix.counts.tolist(), strict=True)) == [
        (0, 6),
        (1, 20),
        (1, 70),
    ]
    assert set(mix.mem.tolist()) == {0}
    assert abs(mix.weight.sum() - 1.0) < 1e-12


def test_every_artifact_baseline_fills_a_small_cluster_without_overcommitting() -> None:
    nodes = [Node(f"n{i}", 64_000, 262_144, "T4", (2, 4, 8)[i % 3]) for i in range(9)]
    shapes = [
        Demand(4000, 8192, 1, 1000),
        Demand(2000, 4096, 1, 300),
        Demand(16_000, 8192, 4, 1000),
    ]
    workloads = [Workload(f"w{i}", shapes[i % 3]) for i in range(60)]
    for strategy in (
        PlacementStrategy.BEST_FIT,
        PlacementStrategy.PACKING,
        PlacementStrategy.CLUSTERING,
        PlacementStrategy.DOT_PRODUCT,
        PlacementStrategy.FGD,
    ):
        curve = replay_inflation(nodes, workloads, strategy, seed=42)
        assert curve.placed > 0
        # 100% arrived is reachable; what is left unallocated is a share of capacity.
        assert 0.0 <= curve.unallocated_at(100) < 100.0
