"""A Ray head that goes away and comes back on the same address, with replicas placed on it.

The cluster runs in a process of its own (``HOST``: a head and one node, token
authentication, no dashboard), so that its head can be killed and a new one started on the
same port while this process stays the driver: an in-process ``ray.cluster_utils.Cluster``
keeps a state accessor of its own whose calls to the old head end the process once a new
head answers. Without GCS fault tolerance a new head is a new cluster: its nodes join anew
and no actor of the old one survives, which is what a restart of the head machine does.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import ray
from tests.kit import free_port
from tests.kit.ray_cluster import _auth_reset

from modelplane.backends.ray import HEAD_RESTARTED, LinkSettings, RayBackend
from modelplane.controlplane.placement import Outcome, ReplicaPlacer
from modelplane.core.backend import ReplicaSpec, ReplicaState, ReplicaWant
from modelplane.core.cluster import Demand
from modelplane.errors import WorkerFailed
from modelplane.spec.policy import Policy

pytestmark = pytest.mark.xdist_group("ray")
T = TypeVar("T")
SPEC = ReplicaSpec("fake_models:load", paths=(str(Path(__file__).parents[1] / "dataplane"),))
WANTED = [ReplicaWant(f"r-{i}", SPEC, Demand(500, 64)) for i in range(2)]
LINK = LinkSettings(call_timeout_s=3.0, probe_timeout_s=0.5, backoff_min_s=0.2, backoff_max_s=1.0)

HOST = """
import json, sys
from ray._private import ray_constants
ray_constants.ENABLE_RAY_CLUSTER = False  # every node on loopback, as the kit does
from ray.cluster_utils import Cluster
common = dict(include_dashboard=False, node_ip_address="127.0.0.1", object_store_memory=80 << 20)
cluster = Cluster(initialize_head=True, shutdown_at_exit=False, head_node_args=dict(
    common, num_cpus=0, gcs_server_port=int(sys.argv[1]), labels={"modelplane.io/node": "head"}))
cluster.add_node(**common, num_cpus=2, memory=1 << 30, labels={"modelplane.io/node": "cpu-a"})
cluster.wait_for_nodes()
print(json.dumps({"address": cluster.address}), flush=True)
sys.stdin.readline()  # then every process of every node is killed, as a machine that dies
for node in [*cluster.worker_nodes, cluster.head_node]:
    node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
print("gone", flush=True)
"""


class ClusterHost:
    """A head and a node on ``port``, in a subprocess; ``crash`` kills every Ray process."""

    def __init__(self, port: int, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOST, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the host prints once its nodes are up
        assert line, f"the cluster host exited ({self.process.wait(10)})"
        self.address = str(json.loads(line)["address"])

    def crash(self) -> None:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        if self.process.poll() is None:
            stdin.write("crash\n")
            stdin.flush()
            assert stdout.readline().strip() == "gone"
        self.process.wait(30)
        stdin.close()
        stdout.close()


@contextmanager
def token_env() -> Iterator[dict[str, str]]:
    """This process and the hosts share a fresh token; Ray's cached one is dropped."""
    names = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    saved = {name: os.environ.get(name) for name in names}
    reset = _auth_reset()
    ray.shutdown()
    if reset is not None:
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        os.environ |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        reset()
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if reset is not None:
            reset()


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 180)

    return asyncio.run(bounded())


async def timed(coro: Awaitable[T]) -> tuple[T, float]:
    start = time.monotonic()
    value = await coro
    return value, time.monotonic() - start


def test_a_restarted_head_is_joined_again_and_its_replicas_placed_again() -> None:
    port = free_port()
    with token_env() as env:
        hosts = [ClusterHost(port, env)]
        try:
            run(scenario(hosts, lambda: ClusterHost(port, env)))
        finally:
            for host in hosts:
                host.crash()


async def scenario(hosts: list[ClusterHost], restart: Callable[[], ClusterHost]) -> None:
    first = hosts[0]
    backend = RayBackend.connect(first.address, link=LINK)
    placer = ReplicaPlacer(backend, Policy(), start_timeout_s=60)
    try:
        report = await placer.reconcile(WANTED)
        assert report.where() == {"r-0": "cpu-a", "r-1": "cpu-a"}
        before = {s.name: s.pid for s in await backend.replicas()}

        await asyncio.to_thread(first.crash)
        # While the head is away every call ends at once, saying what it knows.
        nodes, took = await timed(backend.nodes())
        assert nodes
        assert not any(n.alive for n in nodes)
        assert took < LINK.probe_timeout_s + 1
        statuses, took = await timed(backend.replicas())
        assert {(s.name, s.state, s.reason) for s in statuses} == {
            ("r-0", ReplicaState.DEAD, HEAD_RESTARTED),
            ("r-1", ReplicaState.DEAD, HEAD_RESTARTED),
        }
        assert took < 1
        with pytest.raises(WorkerFailed, match=HEAD_RESTARTED):
            await backend.predict("r-0", {"x": np.array([[1.0, 1.0]])}, 5)
        down, took = await timed(placer.reconcile(WANTED))
        assert took < 5
        assert {(e.name, e.outcome) for e in down.entries} >= {
            ("r-0", Outcome.LOST),
            ("r-1", Outcome.LOST),
            ("r-0", Outcome.PENDING),
        }
        assert await backend.replicas() == []

        second = await asyncio.to_thread(restart)
        hosts.append(second)
        assert second.address == first.address
        # The backend joins the new head by itself; each pass stays short meanwhile.
        deadline = time.monotonic() + 90
        placed: dict[str, str] = {}
        while placed != {"r-0": "cpu-a", "r-1": "cpu-a"}:
            assert time.monotonic() < deadline, f"not placed again: {placed}"
            report, took = await timed(placer.reconcile(WANTED))
            assert took < 30
            placed = report.where()
            await asyncio.sleep(0.2)
        assert backend.head_up
        after = {s.name: s for s in await backend.replicas()}
        assert all(s.state is ReplicaState.READY for s in after.values())
        assert {n: s.pid for n, s in after.items()} != before
        for name in after:
            answer = await backend.predict(name, {"x": np.array([[1.0, 2.0]])}, 10)
            np.testing.assert_array_equal(answer["y"], [[2.0, 4.0]])
    finally:
        await backend.close()
