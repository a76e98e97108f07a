"""Placement enforced on a real three-node Ray cluster: the policy decides, Ray carries it out.

Each test reads where replicas really are from Ray's actor table (the GCS), not from what the
controller says it did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.kit import wait_for
from tests.kit.ray_cluster import NodeShape, RayTestCluster, ray_test_cluster

from modelplane.backends.ray import RayBackend
from modelplane.controlplane.placement import Outcome, PlacementReport, ReplicaPlacer, snapshot_of
from modelplane.core.backend import (
    BackendNode,
    ExecutionBackend,
    ReplicaRequest,
    ReplicaSpec,
    ReplicaState,
    ReplicaStatus,
    ReplicaWant,
)
from modelplane.core.cluster import Demand
from modelplane.core.fragmentation import TaskDistribution
from modelplane.spec.policy import PlacementPolicy, PlacementStrategy, Policy
from modelplane.types import FakeClock

# Ray clusters are started on one xdist worker, one after another: two at once on two
# cores starve each other past their start-up timeouts.
pytestmark = pytest.mark.xdist_group("ray")
T = TypeVar("T")
FAKE_MODELS = str(Path(__file__).parents[1] / "dataplane")
SPEC = ReplicaSpec("fake_models:load", paths=(FAKE_MODELS,))
HALF_GPU = Demand(cpu_milli=0, memory_mib=64, gpus=1, gpu_milli=500)
ONE_CPU = Demand(cpu_milli=1000, memory_mib=64)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayTestCluster]:
    gpu_nodes = [NodeShape(name, 2, gpus=2, gpu_model="A100") for name in ("g1", "g2")]
    with ray_test_cluster(NodeShape("head", 0), gpu_nodes) as running:
        yield running


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 120)

    return asyncio.run(bounded())


def want(name: str, demand: Demand, tier: str = "standard", at: float = 0.0) -> ReplicaWant:
    return ReplicaWant(
        name, SPEC, demand, tier=tier, submitted_at=at, warmup={"x": np.zeros((1, 1))}
    )


def actors_by_node() -> dict[str, str]:
    """Live actor name → node name, read from Ray itself."""
    import ray
    from ray._private import state

    nodes = ray.nodes()  # type: ignore[no-untyped-call]
    names = {n["NodeID"]: n["Labels"].get("modelplane.io/node") for n in nodes}
    return {
        str(row["Name"]): str(names.get(row["Address"]["NodeID"]))
        for row in state.actors().values()
        if row["State"] == "ALIVE" and row.get("Name")
    }


def placer(backend: ExecutionBackend, strategy: PlacementStrategy, **kwargs: Any) -> ReplicaPlacer:
    policy = Policy(placement=PlacementPolicy(strategy=strategy))
    return ReplicaPlacer(backend, policy, clock=FakeClock(), **kwargs)


def test_fgd_and_least_allocated_place_differently_on_a_fragmented_cluster(
    cluster: RayTestCluster,
) -> None:
    shapes = TaskDistribution.from_demands([HALF_GPU, Demand(0, 64, 1, 1000)])

    async def scenario() -> tuple[str, str]:
        backend = RayBackend()
        spread = placer(backend, PlacementStrategy.LEAST_ALLOCATED, shapes=shapes)
        base = want("base", HALF_GPU)
        first = await spread.reconcile([base])
        assert first.where() == {"base": "g1"}
        spreading = await spread.reconcile([base, want("new", HALF_GPU)])
        spread_node = spreading.where()["new"]
        assert actors_by_node()["new"] == spread_node
        await spread.reconcile([base])
        assert "new" not in actors_by_node()
        # the same backend's replicas, now under FGD
        fgd = placer(backend, PlacementStrategy.FGD, shapes=shapes)
        packing = await fgd.reconcile([base, want("new", HALF_GPU)])
        fgd_node = packing.where()["new"]
        assert actors_by_node()["new"] == fgd_node
        await fgd.reconcile([])
        return spread_node, fgd_node

    spread_node, fgd_node = run(scenario())
    # least-allocated spreads onto the empty node; FGD fills the half-used GPU on g1 and
    # keeps g2's two GPUs whole for the 1-GPU tasks the mix expects
    assert (spread_node, fgd_node) == ("g2", "g1")
    assert wait_for(lambda: not actors_by_node(), 30, "every replica stopped") is True


def test_a_critical_replica_preempts_a_batch_one_and_a_dead_node_is_placed_around(
    cluster: RayTestCluster,
) -> None:
    batch = [want(f"batch-{i}", ONE_CPU, tier="batch", at=float(i)) for i in range(4)]
    critical = want("critical-0", ONE_CPU, tier="critical", at=10.0)

    async def scenario() -> None:
        control = placer(RayBackend(), PlacementStrategy.LEAST_ALLOCATED)
        full = await control.reconcile(batch)
        assert sorted(full.where().values()) == ["g1", "g1", "g2", "g2"]
        # 1. the cluster is full: the critical replica evicts one batch replica, for real
        report = await control.reconcile([*batch, critical])
        victims = [e for e in report.entries if e.outcome is Outcome.PREEMPTED]
        assert len(victims) == 1
        assert "lower tier batch" in victims[0].reason
        where = actors_by_node()
        assert victims[0].name not in where, "the victim still runs in Ray"
        assert where["critical-0"] == victims[0].node
        # 2. the victim waits, with the one-line reason, and does not evict anyone back
        again = await control.reconcile([*batch, critical])
        assert victims[0].name in again.pending()
        assert "no node fits" in again.pending()[victims[0].name]
        # 3. the node under the critical replica dies: it is placed again on the node left,
        # evicting a batch replica there; the batch replicas that died with the node wait
        dead = where["critical-0"]
        left = "g1" if dead == "g2" else "g2"
        cluster.kill_node(dead)
        lost = await until_placed(control, [*batch, critical], "critical-0", left)
        assert "critical-0" in lost
        # the node's other replicas end as each of their processes notices it is gone: a
        # pass that ran before one did sees it still running, and the next one stops it
        deadline = asyncio.get_running_loop().time() + 30
        while any(node != left for node in actors_by_node().values()):
            assert asyncio.get_running_loop().time() < deadline, (left, actors_by_node())
            await control.reconcile([*batch, critical])
            await asyncio.sleep(0.2)
        await control.reconcile([])

    run(scenario())


async def until_placed(
    control: ReplicaPlacer, wanted: list[ReplicaWant], name: str, node: str
) -> set[str]:
    """Reconcile until ``name`` runs on ``node`` (Ray takes a while to call a node dead);
    the names reported lost on the way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    lost: set[str] = set()
    while True:
        report = await control.reconcile(wanted)
        lost |= {e.name for e in report.entries if e.outcome is Outcome.LOST}
        if report.where().get(name) == node and actors_by_node().get(name) == node:
            return lost
        if loop.time() > deadline:
            raise AssertionError(f"{name} never ran on {node}: {report.entries}")
        await asyncio.sleep(0.5)


def test_on_the_local_backend_what_fits_nowhere_waits_with_its_reason() -> None:
    from modelplane.backends.local import LocalBackend

    backend = LocalBackend(BackendNode("laptop", 2000, 1024))
    wanted = [want(f"r{i}", ONE_CPU) for i in range(3)]

    async def scenario() -> PlacementReport:
        control = placer(backend, PlacementStrategy.MOST_ALLOCATED)
        try:
            return await control.reconcile(wanted)
        finally:
            await control.reconcile([])
            await backend.close()

    report = run(scenario())
    assert report.where() == {"r0": "laptop", "r1": "laptop"}
    assert report.pending() == {
        "r2": "no node fits (1 nodes: 1 lack cpu); no running workload may be preempted"
    }


@settings(max_examples=200, deadline=None)
@given(
    shares=st.lists(st.sampled_from([0, 250, 500, 1000]), min_size=0, max_size=12),
    slots=st.lists(st.integers(0, 3), min_size=12, max_size=12),
)
def test_the_snapshot_never_counts_a_node_past_its_capacity(
    shares: list[int], slots: list[int]
) -> None:
    nodes = [BackendNode(f"n{i}", 4000, 4096, "A100", 2) for i in range(2)]
    running = []
    for i, share in enumerate(shares):
        demand = Demand(500, 256, 1 if share else 0, share)
        gpu_slots = (slots[i] % 3,) if share else ()  # slot 2 does not exist: the engine's view
        request = ReplicaRequest(f"r{i}", f"n{i % 2}", SPEC, demand, gpu_slots=gpu_slots)
        running.append(
            ReplicaStatus(request.name, request.node, ReplicaState.READY, request=request)
        )
    cluster, held = snapshot_of(nodes, running)
    assert len(held) == len(shares)
    assert (cluster.cpu_free >= 0).all()
    assert (cluster.mem_free >= 0).all()
    assert (cluster.gpu_free >= 0).all()
    assert (cluster.gpu_free <= 1000).all()
    assert int(cluster.cpu_free.sum()) == max(0, 8000 - 500 * len(shares))
