"""Rollout traffic changes: a weight-only update keeps every worker, and routes come and go
without failing a request; per-route evidence counts what each route answered."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest
from tests.dataplane import gateway_kit as kit

from modelplane.dataplane.endpoint_runtime import EndpointConfig
from modelplane.dataplane.server import ServerThread
from modelplane.spec.endpoint import Route

pytestmark = pytest.mark.timeout(180)

ROW = {"instances": [{"x": [1.0, 2.0, 3.0, 4.0], "n": 5, "s": "hello", "b": True}]}
PATH = "/v1/endpoints/echo:predict"


def two_routes(stable: float, canary: float | None) -> EndpointConfig:
    """``echo`` on echo:1 (stable) and, unless ``canary`` is None, echo:2 (same package)."""
    base = kit.EndpointBuilder("echo", "echo").build()
    v1, v2 = kit.source("echo", 1), kit.source("echo", 2)
    routes = [Route(model=v1.label, weight=stable)]
    models = {v1.label: v1}
    if canary is not None:
        routes.append(Route(model=v2.label, weight=canary))
        models[v2.label] = v2
    return EndpointConfig(base.endpoint.model_copy(update={"routes": tuple(routes)}), models)


def hammer(url: str, stop: threading.Event, seen: Counter[tuple[int, str]]) -> None:
    with httpx.Client(base_url=url, timeout=10.0) as http:
        for _ in range(100_000):
            if stop.is_set():
                return
            response = http.post(PATH, json=ROW)
            seen[(response.status_code, response.headers.get("modelplane-model-version", ""))] += 1


def pids(server: ServerThread) -> dict[str, set[int | None]]:
    runtime = server.gateway.handler.endpoints["echo"]
    return {r.ref: {x.pid for x in r.target.pool.replicas()} for r in runtime.routes}


def test_weight_only_update_keeps_workers_and_fails_nothing() -> None:
    with ServerThread([two_routes(100, None)], config=kit.gateway_config()) as server:
        stop, seen = threading.Event(), Counter[tuple[int, str]]()
        load = threading.Thread(target=hammer, args=(server.url, stop, seen))
        load.start()
        try:
            stable_pids = pids(server)["echo:1"]
            server.update([two_routes(100, 0)])  # the canary starts, warm, with no weight
            canary_pids = pids(server)["echo:2"]
            assert pids(server)["echo:1"] == stable_pids
            for stable, canary in ((95, 5), (50, 50), (0, 100), (100, 0)):
                server.update([two_routes(stable, canary)])
                time.sleep(0.3)  # let requests flow at these weights
                assert pids(server) == {"echo:1": stable_pids, "echo:2": canary_pids}
            server.update([two_routes(100, None)])  # the canary drains after the swap
            assert pids(server) == {"echo:1": stable_pids}
        finally:
            stop.set()
            load.join(timeout=30)
    assert seen
    assert {status for status, _ in seen} == {200}
    assert {version for _, version in seen} == {"echo:1", "echo:2"}


def test_route_stats_count_answers_and_latency() -> None:
    with ServerThread([two_routes(50, 50)], config=kit.gateway_config()) as server:
        with httpx.Client(base_url=server.url, timeout=10.0) as http:
            for _ in range(40):
                assert http.post(PATH, json=ROW).status_code == 200
        routes = server.gateway.handler.endpoints["echo"].routes
        arms = [route.target.stats.snapshot() for route in routes]
    assert sum(arm.requests for arm in arms) == 40
    assert all(arm.requests > 0 and arm.errors == 0 for arm in arms)
    for arm in arms:
        assert arm.latency_ms is not None
        assert arm.latency_ms.total == arm.requests
        assert 100.0 in arm.latency_ms.bounds  # the contract's latency objective
        assert (
            sum(h.total for h in arm.numeric.values())
            + sum(sum(c.values()) for c in arm.labels.values())
            == arm.requests
        )
