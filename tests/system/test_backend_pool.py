"""The gateway on replicas an execution backend hosts (``system.backend_pool``), here
``backends.local``: a replica that fits nowhere is pending with its reason in the endpoint's
status line, one killed under load costs no request (retried on the other), comes back
counted as a restart, and a pool that stops leaves nothing running on the backend."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from tests.dataplane import gateway_kit as kit
from tests.kit import wait_for

from modelplane.backends.local import LocalBackend
from modelplane.core.backend import BackendNode
from modelplane.dataplane.endpoint_runtime import EndpointConfig
from modelplane.dataplane.server import ServerThread
from modelplane.security.sandbox import UID_BASE
from modelplane.spec.policy import Policy
from modelplane.system.backend_pool import BackendFleet, BackendPool
from modelplane.system.gateway_views import GatewayReplicas, GatewayTarget

pytestmark = pytest.mark.timeout(180)
PATH = "/v1/endpoints/echo:predict"
ROW = {"instances": [{"x": [1.0, 2.0, 3.0, 4.0], "n": 5, "s": "hello", "b": True}]}


def echo(replicas: int) -> EndpointConfig:
    one = kit.EndpointBuilder("echo", "echo").build()
    return EndpointConfig(one.endpoint.model_copy(update={"replicas": replicas}), one.models)


def small_box() -> BackendFleet:
    """Replicas on a node with room for one of the echo package (1 core, 512 MiB each)."""
    backend = LocalBackend(BackendNode("small", cpu_milli=1500, memory_mib=4096))
    return BackendFleet(backend, Policy, start_timeout_s=60)


def the_pool(server: ServerThread) -> BackendPool:
    (route,) = server.gateway.handler.endpoints["echo"].routes
    pool = route.target.pool
    assert isinstance(pool, BackendPool)
    return pool


def test_a_replica_that_fits_nowhere_is_pending_with_its_reason() -> None:
    fleet = small_box()
    with ServerThread([echo(2)], config=kit.gateway_config(pools=fleet.pool)) as server:
        assert httpx.post(f"{server.url}{PATH}", json=ROW, timeout=10).status_code == 200
        (pending,) = GatewayTarget(server.gateway).pending_replicas("echo")
        assert pending.startswith("echo:1#1: ")
        assert "small" in pending or "room" in pending or "fit" in pending, pending
        assert GatewayTarget(server.gateway).replica_counts("echo") == (1, 2)
        # the pending one holds nothing anywhere: only the placed one is charged, to its node
        assert [s.node for s in GatewayReplicas(server.gateway).replicas()] == ["small"]
        placed = {r.name: (r.node, r.state) for r in fleet.status() if r.node is not None}
        assert list(placed.values()) == [("small", placed[next(iter(placed))][1])]
    assert fleet.status() == []  # the gateway stopped: every replica it wanted is gone


def test_a_replica_killed_under_load_costs_no_request_and_comes_back() -> None:
    backend = LocalBackend(BackendNode("box", cpu_milli=8000, memory_mib=8192))
    fleet = BackendFleet(backend, Policy, start_timeout_s=60)
    with ServerThread([echo(2)], config=kit.gateway_config(pools=fleet.pool)) as server:
        pool = the_pool(server)
        codes: Counter[int] = Counter()
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=server.url, timeout=10.0) as http:
                for _ in range(100_000):
                    if stop.is_set():
                        return
                    codes[http.post(PATH, json=ROW).status_code] += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: sum(codes.values()) >= 50, 30, "load before the kill")
            victim = next(r for r in pool.replicas() if r.pid is not None)
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)
            wait_for(lambda: pool.restarts == 1, 30, "the kill counted as a restart")
            wait_for(
                lambda: (
                    all(r.state.value == "ready" for r in pool.replicas())
                    and victim.pid not in {r.pid for r in pool.replicas()}
                ),
                60,
                "the killed replica placed again",
            )
            sent = sum(codes.values())
            wait_for(lambda: sum(codes.values()) >= sent + 50, 30, "load after the restart")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    assert codes == Counter({200: sum(codes.values())}), codes


def test_replicas_on_a_backend_run_in_the_workers_sandbox_and_are_charged_to_their_node() -> None:
    backend = LocalBackend(BackendNode("box", cpu_milli=8000, memory_mib=8192))
    fleet = BackendFleet(backend, Policy, start_timeout_s=60)
    with ServerThread([echo(1)], config=kit.gateway_config(pools=fleet.pool)) as server:
        (replica,) = the_pool(server).replicas()
        assert replica.pid is not None
        uid = int(Path(f"/proc/{replica.pid}/status").read_text().split("Uid:")[1].split()[1])
        # hosted by a backend (another machine's pid, on Ray): never read here, but its
        # reservation is charged to its node (this backend reads no usage: none handed over)
        (view,) = server.gateway.snapshot().endpoints["echo"].versions[0].replicas
        assert view.hosted
        assert view.accounted
        (slot,) = GatewayReplicas(server.gateway).replicas()
        assert (slot.node, slot.pid, slot.reading) == ("box", replica.pid, None)
        assert slot.cpu_milli > 0
    if os.geteuid() == 0:  # the sandbox gives each package a uid of its own
        assert uid >= UID_BASE
    else:
        assert uid == os.geteuid()
