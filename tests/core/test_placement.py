from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.core.cluster import Binding, ClusterSnapshot, Demand, Workload
from modelplane.core.fragmentation import TaskDistribution, cluster_fragmentation
from modelplane.core.placement import (
    PlacementRequest,
    PlacementState,
    dominant_share,
    fgd_score,
    gpu_class,
    place,
    queue_order,
)
from modelplane.spec.policy import PlacementPolicy, PlacementStrategy

from .sched_builders import ClusterBuilder, PolicyBuilder, job

S = PlacementStrategy


def _place(
    cluster: ClusterSnapshot,
    workload: Workload,
    strategy: PlacementStrategy,
    shapes: TaskDistribution | None = None,
) -> Binding | None:
    decision, _ = place(
        PlacementRequest(cluster, workload, shapes),
        PlacementPolicy(strategy=strategy),
        0.0,
        PlacementState(),
    )
    return decision.binding


def _two_nodes_one_busy() -> ClusterSnapshot:
    cluster = ClusterBuilder().node("a", gpus=2).node("b", gpus=2).build()
    return cluster.bind(job("x", gpus=1).demand, Binding(0, (0,), 1000))


@pytest.mark.parametrize(
    ("strategy", "node"),
    [(S.MOST_ALLOCATED, 0), (S.LEAST_ALLOCATED, 1), (S.DRF, 1), (S.FGD, 0)],
)
def test_strategies_pack_or_spread(strategy: PlacementStrategy, node: int) -> None:
    binding = _place(_two_nodes_one_busy(), job("y", gpus=1), strategy)
    assert binding is not None
    assert binding.node == node


@pytest.mark.parametrize(
    ("strategy", "slot"), [(S.MOST_ALLOCATED, 1), (S.LEAST_ALLOCATED, 0), (S.FGD, 0)]
)
def test_gpu_sharing_slot_choice(strategy: PlacementStrategy, slot: int) -> None:
    """FGD with only 0.3-GPU tasks in the mix refuses to strand 200 beside the half."""
    cluster = ClusterBuilder().node(gpus=2).build()
    cluster = cluster.bind(job("x", gpus=1, milli=500).demand, Binding(0, (1,), 500))
    binding = _place(cluster, job("y", gpus=1, milli=300), strategy)
    assert binding == Binding(0, (slot,), 300)


def test_gpu_model_constraint_and_explanation() -> None:
    cluster = ClusterBuilder().node(gpus=1, model="T4").node(cpu=500).build()
    decision, _ = place(
        PlacementRequest(cluster, job("y", gpus=1, models=("A10",))),
        PlacementPolicy(),
        0.0,
        PlacementState(),
    )
    assert not decision.placed
    assert decision.reason == "no node fits (2 nodes: 2 lack GPU model, 1 lack cpu)"


def test_random_is_seeded_and_advances_its_state() -> None:
    cluster = ClusterBuilder().nodes(20, gpus=1).build()
    request = PlacementRequest(cluster, job("y", gpus=1))
    config = PlacementPolicy(strategy=S.RANDOM, seed=3)
    first, state = place(request, config, 0.0, PlacementState())
    again, _ = place(request, config, 0.0, PlacementState())
    second, state = place(request, config, 0.0, state)
    assert first == again
    assert state.draws == 2
    assert {first.node, second.node} <= {n.name for n in cluster.nodes}


def test_fgd_keeps_whole_gpus_free_for_the_mix() -> None:
    """A 0.5-GPU task goes beside another half, not onto an empty GPU whole tasks need."""
    cluster = ClusterBuilder().node("a", gpus=1).node("b", gpus=1).build()
    cluster = cluster.bind(job("x", gpus=1, milli=500).demand, Binding(1, (0,), 500))
    shapes = TaskDistribution.from_demands(
        [job("w", gpus=1).demand] * 3 + [job("h", gpus=1, milli=500).demand]
    )
    binding = _place(cluster, job("y", gpus=1, milli=500), S.FGD, shapes)
    assert binding is not None
    assert binding.node == 1


def test_fragmentation_counts_what_the_mix_cannot_use() -> None:
    cluster = ClusterBuilder().node(gpus=2).build()
    cluster = cluster.bind(job("x", gpus=1, milli=700).demand, Binding(0, (0,), 700))
    # Only whole-GPU tasks: the 300 left on slot 0 is a fragment, slot 1 is not.
    whole = TaskDistribution.from_demands([job("w", gpus=1).demand])
    frag = cluster_fragmentation(
        cluster.cpu_free,
        cluster.mem_free,
        cluster.gpu_free,
        cluster.model_idx,
        shapes=whole,
        models=cluster.models,
    )
    assert frag == pytest.approx(300)
    # Tasks needing two GPUs cannot run at all: everything free is a fragment.
    pairs = TaskDistribution.from_demands([job("p", gpus=2).demand])
    assert cluster_fragmentation(
        cluster.cpu_free,
        cluster.mem_free,
        cluster.gpu_free,
        cluster.model_idx,
        shapes=pairs,
        models=cluster.models,
    ) == pytest.approx(1300)


def test_queue_order_tiers_then_drf() -> None:
    policy = PolicyBuilder().strategy(S.DRF).build()
    pending = [
        job("b1", team="big", tier="batch"),
        job("s1", team="small", tier="batch", at=5.0),
        job("c1", team="big", tier="critical", at=9.0),
    ]
    usage = {"big": {"gpu": 3000}, "small": {"gpu": 1000}}
    order = queue_order(pending, policy, usage, {"gpu": 4000})
    assert [w.name for w in order] == ["c1", "s1", "b1"]
    assert dominant_share({"gpu": 1000, "cpu": 50}, {"gpu": 4000, "cpu": 100}) == 0.5


demands = st.builds(
    lambda cpu, gpus, milli: Demand(cpu, 512, gpus, (milli if gpus == 1 else 1000) if gpus else 0),
    st.integers(0, 16_000),
    st.sampled_from([0, 1, 1, 1, 2, 4]),
    st.integers(1, 1000),
)


@settings(max_examples=40, deadline=None)
@given(
    seq=st.lists(demands, min_size=1, max_size=40),
    strategy=st.sampled_from(list(S)),
)
def test_never_over_capacity(seq: list[Demand], strategy: PlacementStrategy) -> None:
    cluster = ClusterBuilder().node(gpus=4).node(gpus=2, model="T4").node(cpu=8000).build()
    shapes = TaskDistribution.from_demands(seq)
    state = PlacementState()
    used_cpu = np.zeros(3, dtype=np.int64)
    used_gpu = np.zeros((3, 4), dtype=np.int64)
    for i, demand in enumerate(seq):
        workload = Workload(f"w{i}", demand)
        decision, state = place(
            PlacementRequest(cluster, workload, shapes),
            PlacementPolicy(strategy=strategy),
            0,
            state,
        )
        if decision.binding is None:
            assert not cluster.fits(demand).any()
            continue
        cluster = cluster.bind(demand, decision.binding)
        used_cpu[decision.binding.node] += demand.cpu_milli
        for slot in decision.binding.gpus:
            used_gpu[decision.binding.node, slot] += demand.gpu_milli
        assert (used_cpu <= cluster.cpu_cap).all()
        assert (used_gpu <= 1000).all()
        assert (used_gpu.sum(axis=1) <= cluster.gpu_cap).all()


# --- the ATC '23 artifact's rules (hkust-adsl/kubernetes-scheduler-simulator) ---


def test_fgd_score_is_the_artifacts_whole_points() -> None:
    """int64(sigmoid((before - after) / 1000) * 100): 50 for no change, truncated."""
    added = np.array([0.0, 19.0, 41.0, -1000.0, 1000.0, 8000.0])
    assert fgd_score(added).tolist() == [50.0, 49.0, 48.0, 73.0, 26.0, 0.0]


def test_fgd_tie_goes_to_the_first_name_not_the_first_index() -> None:
    """Identical empty nodes tie; the artifact's selectHost keeps the smallest name."""
    cluster = ClusterBuilder().node("node-b", gpus=2).node("node-a", gpus=2).build()
    binding = _place(cluster, job("y", gpus=1), S.FGD)
    assert binding is not None
    assert cluster.nodes[binding.node].name == "node-a"


def test_fgd_takes_the_lowest_gpu_among_equal_scores() -> None:
    """Free [1000, 500, 500], a 0.5-GPU pod and a mix of 0.5-GPU pods: every GPU adds no
    fragmentation (score 50), so the artifact keeps GPU 0, the first it walks, even though
    a half-used GPU fits as tightly."""
    cluster = ClusterBuilder().node(gpus=3).build()
    half = job("h", gpus=1, milli=500).demand
    cluster = cluster.bind(half, Binding(0, (1,), 500)).bind(half, Binding(0, (2,), 500))
    shapes = TaskDistribution.from_demands([half])
    assert _place(cluster, job("y", gpus=1, milli=500), S.FGD, shapes) == Binding(0, (0,), 500)


def test_fgd_small_differences_tie_in_whole_points() -> None:
    """Adding 10 or 30 milli-GPU of fragmentation both score 49: they tie."""
    assert fgd_score(np.array([10.0, 30.0])).tolist() == [49.0, 49.0]


def _artifact_cluster() -> ClusterSnapshot:
    """a: 8 GPUs, two shared at 500 free; b: 8 GPUs, one whole GPU used; c: empty 2-GPU."""
    cluster = (
        ClusterBuilder()
        .node("a", cpu=96_000, gpus=8)
        .node("b", cpu=96_000, gpus=8)
        .node("c", cpu=64_000, gpus=2)
        .build()
    )
    half = job("h", gpus=1, milli=500).demand
    cluster = cluster.bind(half, Binding(0, (0,), 500)).bind(half, Binding(0, (1,), 500))
    return cluster.bind(job("w", gpus=1).demand, Binding(1, (0,), 1000))


@pytest.mark.parametrize(
    ("strategy", "node", "slots"),
    [
        # free CPU and GPU over 128 cores and 8 GPUs: c has least left (2 GPUs, 64 cores).
        (S.BEST_FIT, "c", (0,)),
        # a shared GPU beats a whole one: a, on its fullest fitting GPU (0, lowest index).
        (S.PACKING, "a", (0,)),
        # only b runs 1-GPU work ("1-gpu" alone: band 75..100).
        (S.CLUSTERING, "b", (1,)),
        # least free CPU x CPU + GPU x GPU: c again.
        (S.DOT_PRODUCT, "c", (0,)),
    ],
)
def test_artifact_baselines_on_a_small_cluster(
    strategy: PlacementStrategy, node: str, slots: tuple[int, ...]
) -> None:
    cluster = _artifact_cluster()
    classes = [frozenset({"share-gpu"}), frozenset({"1-gpu"}), frozenset()]
    demand = job("y", cpu=4000, gpus=1, milli=300 if strategy is S.PACKING else 1000).demand
    decision, _ = place(
        PlacementRequest(cluster, Workload("y", demand), node_classes=classes),
        PlacementPolicy(strategy=strategy),
        0.0,
        PlacementState(),
    )
    assert decision.node == node
    assert decision.binding is not None
    assert decision.binding.gpus == slots


def test_packing_scores_follow_the_artifacts_bands() -> None:
    """Shared GPU: 100 - free%/10 (>= 50); fully free GPU on a used node: 50 - count
    (>= 33); an empty node: max(33 - GPUs, GPUs)."""
    cluster = _artifact_cluster()
    decision, _ = place(
        PlacementRequest(cluster, job("y", gpus=1, milli=300)),
        PlacementPolicy(strategy=S.PACKING),
        0.0,
        PlacementState(),
    )
    assert decision.score == 95.0  # 500 free on the shared GPU: 100 - 50 // 10
    decision, _ = place(
        PlacementRequest(cluster, job("z", gpus=1, milli=700)),
        PlacementPolicy(strategy=S.PACKING),
        0.0,
        PlacementState(),
    )
    # No shared GPU holds 700: a fully free GPU of a used node scores 49 (a and b tie, a).
    assert (decision.node, decision.score) == ("a", 49.0)


def test_clustering_without_a_record_infers_classes_from_the_gpus() -> None:
    """Partly used GPUs read as shared work: a shared request joins node a."""
    decision, _ = place(
        PlacementRequest(_artifact_cluster(), job("y", gpus=1, milli=200)),
        PlacementPolicy(strategy=S.CLUSTERING),
        0.0,
        PlacementState(),
    )
    assert decision.node == "a"
    assert gpu_class(job("y", gpus=1, milli=200).demand) == "share-gpu"
    assert gpu_class(job("y", gpus=4).demand) == "4-gpu"
    assert gpu_class(job("y").demand) == "no-gpu"
