"""The Ray backend on a real three-node cluster: pinned actors, the same resources, the
data path both ways, and a replica's socket closed to anyone without its secret."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import ray
from tests.kit.ray_cluster import NodeShape, RayTestCluster, ray_test_cluster

from modelplane.backends.ray import DataPath, RayBackend
from modelplane.backends.wire import SocketChannel
from modelplane.core.backend import ReplicaRequest, ReplicaSpec, ReplicaState
from modelplane.core.cluster import Demand
from modelplane.errors import WorkerFailed

# Ray clusters are started on one xdist worker, one after another: two at once on two
# cores starve each other past their start-up timeouts.
pytestmark = pytest.mark.xdist_group("ray")
T = TypeVar("T")
SPEC = ReplicaSpec("fake_models:load", paths=(str(Path(__file__).parents[1] / "dataplane"),))
WARMUP = {"x": np.zeros((1, 2))}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayTestCluster]:
    gpu = NodeShape(
        "gpu-a", 2, gpus=2, gpu_model="A100", labels={"modelplane.io/cost-per-hour": "3.25"}
    )
    with ray_test_cluster(NodeShape("head", 0), [NodeShape("cpu-a", 2, memory_gib=2), gpu]) as c:
        yield c


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 120)

    return asyncio.run(bounded())


def actor_node(name: str) -> str | None:
    from ray._private import state

    nodes: Any = ray.nodes()  # type: ignore[no-untyped-call]
    names = {n["NodeID"]: n["Labels"].get("modelplane.io/node") for n in nodes}
    for row in state.actors().values():
        if row.get("Name") == name and row["State"] == "ALIVE":
            return str(names[row["Address"]["NodeID"]])
    return None


def test_nodes_are_read_from_ray_and_the_cluster_is_closed(cluster: RayTestCluster) -> None:
    backend = RayBackend()
    nodes = {n.name: n for n in run(backend.nodes())}
    assert sorted(nodes) == ["cpu-a", "gpu-a", "head"]
    assert (nodes["cpu-a"].cpu_milli, nodes["cpu-a"].memory_mib) == (2000, 2048)
    gpu = nodes["gpu-a"]
    assert (gpu.gpu_model, gpu.gpu_count, gpu.cost_per_hour) == ("A100", 2, 3.25)
    assert all(n.alive and n.engine_id for n in nodes.values())
    # token authentication on, no dashboard: nothing to warn about
    assert backend.exposure() == []


@pytest.mark.parametrize("path", [DataPath.SOCKET, DataPath.ACTOR])
def test_a_replica_runs_pinned_with_a_quarter_gpu_and_answers(
    cluster: RayTestCluster, path: DataPath
) -> None:
    backend = RayBackend(data_path=path)
    name = f"quarter-{path}"
    request = ReplicaRequest(name, "gpu-a", SPEC, Demand(500, 64, 1, 250), warmup=WARMUP)

    async def scenario() -> None:
        status = await backend.start(request, 60)
        assert status.state is ReplicaState.READY
        assert actor_node(name) == "gpu-a"
        free: Any = ray.available_resources()  # type: ignore[no-untyped-call]
        assert free["GPU"] == pytest.approx(1.75)
        answer = await backend.predict(name, {"x": np.array([[1.0, 2.0]])}, 10)
        np.testing.assert_array_equal(answer["y"], [[2.0, 4.0]])
        assert int(answer["pid"][0]) == status.pid
        assert await backend.ping(name, 10)
        (seen,) = await backend.replicas()
        assert (seen.name, seen.node, seen.state) == (name, "gpu-a", ReplicaState.READY)
        with pytest.raises(WorkerFailed, match="the model raised ValueError"):
            await backend.predict(name, {"x": np.array([[-2.0, 0.0]])}, 10)
        await backend.stop(name, 1.0)
        assert await backend.replicas() == []

    run(scenario())
    assert actor_node(name) is None


def test_a_replica_its_node_cannot_take_fails_and_runs_nowhere(cluster: RayTestCluster) -> None:
    backend = RayBackend()
    # three CPUs on a two-CPU node: a soft affinity would put it elsewhere, a hard one waits
    request = ReplicaRequest("too-big", "cpu-a", SPEC, Demand(3000, 64))
    with pytest.raises(WorkerFailed, match="did not start on cpu-a"):
        run(backend.start(request, 3.0))
    assert actor_node("too-big") is None
    with pytest.raises(WorkerFailed, match="node nowhere is not alive"):
        run(backend.start(ReplicaRequest("lost", "nowhere", SPEC, Demand(100, 64)), 3.0))


def test_a_replica_socket_refuses_a_caller_without_its_secret(cluster: RayTestCluster) -> None:
    backend = RayBackend()
    request = ReplicaRequest("guarded", "cpu-a", SPEC, Demand(500, 64))

    async def scenario() -> None:
        await backend.start(request, 60)
        handle: Any = ray.get_actor("guarded", namespace="modelplane")
        _, _, host, port, _ = await handle.ready.remote(10)
        with pytest.raises(WorkerFailed, match=r"cannot reach|refused"):
            await SocketChannel.connect(host, port, "not-the-secret", 10)
        await backend.close()

    run(scenario())


def test_the_docs_example_places_two_quarter_gpu_replicas(
    cluster: RayTestCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "backends.md").read_text()
    example = docs.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(example, "docs/backends.md", "exec"), namespace)
    where = run(namespace["place_and_ask"](RayBackend(), SPEC))
    assert where == {"fraud-0": "gpu-a", "fraud-1": "gpu-a"}
    printed = capsys.readouterr().out
    assert "fraud-0 answered [[2.0, 2.0]]" in printed
    assert actor_node("fraud-0") is None


def test_replicas_are_listed_for_their_owner_only(cluster: RayTestCluster) -> None:
    """Two deployments (two state stores) on one cluster serving the same endpoint and
    version: each one's gateways attach to its own replicas, never the other's."""
    ours, theirs = RayBackend(owner="store-a"), RayBackend(owner="store-b")
    request = ReplicaRequest(
        "owned", "cpu-a", SPEC, Demand(100, 64), endpoint="fraud", model="fraud:1"
    )

    async def scenario() -> tuple[dict[str, str], dict[str, str]]:
        await ours.start(request, 60)
        try:
            return await ours.placed_for("fraud", "fraud:1"), await theirs.placed_for(
                "fraud", "fraud:1"
            )
        finally:
            await ours.close()

    mine, other = run(scenario())
    assert mine == {"owned": "cpu-a"}
    assert other == {}


def test_a_node_without_the_package_fetches_it_from_the_artifact_store(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    """Nodes share the artifact store, not a filesystem: a replica whose package folder is
    missing on its node fetches it there, verified, before its model process starts."""
    from tests.dataplane import gateway_kit as kit

    from modelplane.dataplane.loader import LOADER
    from modelplane.dataplane.pool import sample_inputs
    from modelplane.registry.service import verify_digest
    from modelplane.store.artifacts import open_artifact_store

    model = kit.source("sklearn")
    store = tmp_path / "artifacts"
    digest = open_artifact_store(str(store), verify=verify_digest).put_package(model.directory)
    folder = tmp_path / "node-cache" / digest.removeprefix("sha256:")
    spec = ReplicaSpec(
        LOADER, args=(str(folder), digest), package=(str(folder), digest, str(store))
    )
    sample = sample_inputs(model.manifest.signature, rows=2)
    request = ReplicaRequest("fetched", "cpu-a", spec, Demand(100, 256), warmup=sample)
    backend = RayBackend()

    async def scenario() -> dict[str, Any]:
        await backend.start(request, 90)
        try:
            return await backend.predict("fetched", sample, 30)
        finally:
            await backend.close()

    answer = run(scenario())
    assert folder.is_dir()
    assert verify_digest(folder, digest) == digest
    assert len(next(iter(answer.values()))) == 2
    with pytest.raises(ValueError, match=r"spec\.package"):
        ReplicaSpec(LOADER, package=(str(folder), digest, ""))


def test_a_replica_on_ray_is_charged_to_its_node_with_its_use_read_there(
    cluster: RayTestCluster, sqlite_url: str
) -> None:
    """The usage sampler on the gateway's machine counts a Ray replica: its reservation on
    the node placement chose, named as placement names it, and its model process as its
    actor read it on that node (nothing of it read here)."""
    from tests.dataplane import gateway_kit as kit

    from modelplane.controlplane.usage import UsageSampler
    from modelplane.dataplane.server import ServerThread
    from modelplane.observe.usage import read_usage
    from modelplane.spec.policy import Policy
    from modelplane.store.db import open_engine
    from modelplane.system.backend_pool import BackendFleet
    from modelplane.system.gateway_views import GatewayReplicas

    fleet = BackendFleet(RayBackend(), Policy, start_timeout_s=60)
    engine = open_engine(sqlite_url)
    echo = kit.EndpointBuilder("echo", "echo").build()
    with ServerThread([echo], config=kit.gateway_config(pools=fleet.pool)) as server:
        loop = server.gateway.loop
        assert loop is not None
        (placed,) = fleet.status()
        assert placed.node in {"cpu-a", "gpu-a"}
        sampler = UsageSampler(engine, GatewayReplicas(server.gateway), list, sample_s=1)
        for _ in range(2):
            # what the placement controller does every usage_every_s, on the gateway's loop
            asyncio.run_coroutine_threadsafe(fleet.refresh_usage(), loop).result(30)
            (slot,) = GatewayReplicas(server.gateway).replicas()
            assert slot.node == placed.node
            assert slot.reading is not None
            assert slot.reading.age_s is not None  # read on its node, from /proc there
            run(sampler.sample())
        run(sampler.flush())
    (interval,) = read_usage(engine, 0, 1e12)
    engine.dispose()
    assert interval.node == placed.node
    assert (interval.cpu_milli, interval.memory_mib) == (slot.cpu_milli, slot.memory_mib)
    assert interval.cpu_milli > 0
    assert interval.memory_mib > 0
    assert interval.samples == 2
    assert interval.memory_peak_mib > 10  # a Python process with its model, read on its node
