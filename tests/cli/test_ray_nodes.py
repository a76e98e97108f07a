"""``modelplane nodes --ray-address``: a real token-authenticated Ray cluster's nodes, the
replicas on each read from Ray, and no warning for a cluster that is closed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.kit import CLI, home_env
from tests.kit.ray_cluster import NodeShape, RayTestCluster, ray_test_cluster

from modelplane.backends.ray import RayBackend
from modelplane.core.backend import ReplicaRequest, ReplicaSpec
from modelplane.core.cluster import Demand

# Ray clusters are started on one xdist worker, one after another: two at once on two
# cores starve each other past their start-up timeouts.
pytestmark = pytest.mark.xdist_group("ray")
SPEC = ReplicaSpec("fake_models:load", paths=(str(Path(__file__).parents[1] / "dataplane"),))


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayTestCluster]:
    gpu = NodeShape(
        "gpu-a", 1, gpus=1, gpu_model="T4", labels={"modelplane.io/cost-per-hour": "0.5"}
    )
    with ray_test_cluster(NodeShape("head", 1), [gpu]) as running:
        yield running


def nodes_cli(
    cluster: RayTestCluster,
    tmp_path: Path,
    *args: str,
    token: str | None = None,
    command: str = "nodes",
) -> subprocess.CompletedProcess[str]:
    env = (
        home_env(tmp_path / "home")
        | cluster.join_env(token)
        | {
            "PATH": os.environ.get("PATH", ""),
        }
    )
    return subprocess.run(
        [CLI, command, "--ray-address", cluster.address, *args]
        + (["fraud"] if command == "why" else []),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_nodes_lists_the_ray_cluster_with_its_replicas(
    cluster: RayTestCluster, tmp_path: Path
) -> None:
    request = ReplicaRequest(
        "listed", "gpu-a", SPEC, Demand(500, 64, 1, 500), endpoint="fraud", model="fraud:3"
    )

    async def scenario() -> None:
        backend = RayBackend()
        await backend.start(request, 60)
        try:
            done = await asyncio.to_thread(nodes_cli, cluster, tmp_path, "--json")
            text = await asyncio.to_thread(nodes_cli, cluster, tmp_path)
            why = await asyncio.to_thread(nodes_cli, cluster, tmp_path, command="why")
        finally:
            await backend.close()
        assert done.returncode == 0, done.stderr
        shown = json.loads(done.stdout)
        by_name = {n["name"]: n for n in shown["nodes"]}
        assert sorted(by_name) == ["gpu-a", "head"]
        assert (by_name["gpu-a"]["gpu_model"], by_name["gpu-a"]["cost_per_hour"]) == ("T4", 0.5)
        assert shown["replicas"] == {"gpu-a": 1}
        assert shown["placed"] == [
            {
                "name": "listed",
                "node": "gpu-a",
                "model": "fraud:3",
                "endpoint": "fraud",
                "state": "ready",
                "reason": "",
            }
        ]
        assert "fraud:3" in text.stdout
        assert why.returncode == 0, why.stderr
        assert why.stdout.strip() == "replica listed (fraud:3) is ready on gpu-a"
        assert shown["warnings"] == []
        assert "the cluster is closed" in text.stdout
        assert "warning:" not in text.stderr

    asyncio.run(scenario())


def test_a_caller_without_the_token_is_refused(cluster: RayTestCluster, tmp_path: Path) -> None:
    done = nodes_cli(cluster, tmp_path, token="0" * 64)
    assert done.returncode != 0
    assert "cannot join the Ray cluster" in done.stderr + done.stdout
