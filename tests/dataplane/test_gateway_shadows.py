"""Shadows, sticky routing and in-place resizing, through the real gateway on loopback.

A shadow gets a copy of the traffic and its answers are only compared with what callers
got; sticky routing keeps one key on one version while weights move; a replica count
change adds or removes workers without touching the others or failing a request. Shadows and
resizing run on every backend (``tests.kit.backends``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from tests.dataplane import gateway_kit as kit
from tests.kit import wait_for
from tests.kit.backends import BACKENDS, replica_pools

from modelplane.dataplane.endpoint_runtime import EndpointConfig, ShadowRuntime
from modelplane.dataplane.server import ServerThread
from modelplane.observe.records import PredictionRecord
from modelplane.spec.endpoint import Route, Shadow

pytestmark = pytest.mark.timeout(180)

PATH = "/v1/endpoints/echo:predict"


def row(first: float = 1.0, s: str = "hello") -> dict[str, Any]:
    return {"instances": [{"x": [first, 2.0, 3.0, 4.0], "n": 5, "s": s, "b": True}]}


def shadowed(primary: str, shadow: str, percent: float = 100.0) -> EndpointConfig:
    """``echo`` routed to ``primary`` with ``shadow`` (kinds of gateway_kit) as a shadow."""
    base = kit.EndpointBuilder("echo", "echo").build()
    stable, copy = kit.source(primary), kit.source(shadow)
    endpoint = base.endpoint.model_copy(
        update={
            "routes": (Route(model=stable.label),),
            "shadows": (Shadow(model=copy.label, percent=percent),),
        }
    )
    return EndpointConfig(endpoint, {stable.label: stable, copy.label: copy})


def routed(weights: tuple[float, float], **update: Any) -> EndpointConfig:
    """``echo`` on echo:1 and echo:2 (the same package) with ``weights``."""
    base = kit.EndpointBuilder("echo", "echo").build()
    v1, v2 = kit.source("echo", 1), kit.source("echo", 2)
    routes = (Route(model=v1.label, weight=weights[0]), Route(model=v2.label, weight=weights[1]))
    endpoint = base.endpoint.model_copy(update={"routes": routes, **update})
    return EndpointConfig(type(endpoint).model_validate(endpoint.model_dump()), {
        v1.label: v1, v2.label: v2})  # fmt: skip


def the_shadow(server: ServerThread) -> ShadowRuntime:
    return server.gateway.handler.endpoints["echo"].shadows[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_shadow_answers_are_compared_never_returned(backend: str) -> None:
    # steady zeroes x[0, 0]: its y differs from echo's in one of four columns
    with (
        replica_pools(backend) as pools,
        ServerThread(
            [shadowed("echo", "steady")],
            config=kit.gateway_config(pools=pools),
        ) as server,
    ):
        with httpx.Client(base_url=server.url, timeout=10.0) as http:
            for _ in range(30):
                response = http.post(PATH, json=row(1.0))
                assert response.status_code == 200
                assert response.headers["modelplane-model-version"] == "echo:1"
                assert response.json()["predictions"][0]["y"][0] == 2.0
        shadow = the_shadow(server)
        wait_for(lambda: shadow.comparison.compared == 30, 10, "30 comparisons")
        stats = shadow.comparison.snapshot()
        assert stats.disagreed == 0  # y is a number: compared by relative error
        # steady zeroes x[0, 0] of each batch it gets, and copies travel in batches: a
        # quarter of the first row's y differs in each batch of copies
        assert 0.25 <= stats.relative_error_sum <= 30 * 0.25
        assert shadow.target.stats.snapshot().requests == 30  # the shadow version's evidence
        metrics = httpx.get(f"{server.url}/metrics").text
        labels = 'endpoint="echo",shadow="steady:1"'
        assert f"modelplane_gateway_shadow_compared_total{{{labels}}} 30.0" in metrics
        assert f"modelplane_gateway_shadow_relative_error_total{{{labels}}} " in metrics
        listed = httpx.get(f"{server.url}/v1/endpoints").json()
        assert listed["endpoints"][0]["shadows"] == [{"model": "steady:1", "version": "steady:1",
                                         "percent": 100.0}]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_shadow_never_fails_the_caller(backend: str) -> None:
    # echo raises on x[0, 0] == -2; steady, the primary, ignores it
    with (
        replica_pools(backend) as pools,
        ServerThread(
            [shadowed("steady", "echo")],
            config=kit.gateway_config(pools=pools),
        ) as server,
    ):
        with httpx.Client(base_url=server.url, timeout=10.0) as http:
            statuses = Counter(http.post(PATH, json=row(-2.0)).status_code for _ in range(20))
        assert statuses == {200: 20}
        shadow = the_shadow(server)
        wait_for(lambda: shadow.comparison.failed == 20, 10, "20 failed copies")
        assert shadow.comparison.compared == 0
        assert shadow.target.stats.snapshot().errors == 20


def test_shadow_percent_samples_copies() -> None:
    config = shadowed("echo", "steady", percent=30.0)
    with ServerThread([config], config=kit.gateway_config()) as server:
        with httpx.Client(base_url=server.url, timeout=10.0) as http:
            for _ in range(200):
                assert http.post(PATH, json=row()).status_code == 200
        shadow = the_shadow(server)
        time.sleep(0.3)
        assert 30 <= shadow.comparison.compared <= 95  # 60 expected; 7 sigma either side


def test_sticky_key_keeps_a_caller_on_one_version_as_weight_moves() -> None:
    keys = [f"key-{i}" for i in range(40)]
    contract = kit.EndpointBuilder("echo", "echo").build().endpoint.contract
    assert all(f.enum is None for f in contract.inputs)  # any text is a valid key
    with ServerThread([routed((75, 25), sticky_key="s")], config=kit.gateway_config()) as server:
        with httpx.Client(base_url=server.url, timeout=10.0) as http:

            def versions() -> dict[str, str]:
                seen: dict[str, set[str]] = {}
                for key in keys:
                    for _ in range(3):
                        answer = http.post(PATH, json=row(s=key))
                        assert answer.status_code == 200
                        seen.setdefault(key, set()).add(answer.headers["modelplane-model-version"])
                assert all(len(v) == 1 for v in seen.values()), "a key moved between versions"
                return {key: v.pop() for key, v in seen.items()}

            before = versions()
            assert set(before.values()) == {"echo:1", "echo:2"}
            server.update([routed((25, 75), sticky_key="s")])
            after = versions()
        # a key on the canary stays there as the canary grows
        assert all(after[k] == "echo:2" for k, v in before.items() if v == "echo:2")
        assert sum(v == "echo:2" for v in after.values()) > sum(
            v == "echo:2" for v in before.values()
        )


def test_a_sticky_key_must_name_a_request_field() -> None:
    with pytest.raises(ValueError, match="sticky_key 'customer' is not an input"):
        routed((50, 50), sticky_key="customer")


class KeptRecords:
    def __init__(self) -> None:
        self.records: list[PredictionRecord] = []

    def sampled(self) -> bool:
        return True

    def offer(self, record: PredictionRecord) -> None:
        self.records.append(record)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def test_the_route_kind_says_how_the_route_was_chosen() -> None:
    server = ServerThread([routed((50, 50), sticky_key="s")], config=kit.gateway_config())
    sink = server.gateway.sink = KeptRecords()
    tensors = [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "n", "shape": [1], "datatype": "INT64", "data": [1]},
        {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["bob"]},
        {"name": "b", "shape": [1], "datatype": "BOOL", "data": [True]},
    ]
    with server, httpx.Client(base_url=server.url, timeout=10.0) as http:
        assert http.post(PATH, json=row(s="alice")).status_code == 200
        answer = http.post("/v2/models/echo/versions/2/infer", json={"inputs": tensors})
        assert answer.status_code == 200
    kinds = [record.route_kind for record in sink.records]
    assert kinds == ["sticky", "pinned"]


def pids(server: ServerThread) -> set[int | None]:
    route = server.gateway.handler.endpoints["echo"].routes[0]
    return {replica.pid for replica in route.target.pool.replicas()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_replica_changes_resize_in_place_under_load(backend: str) -> None:
    one = kit.EndpointBuilder("echo", "echo").build()

    def scaled(replicas: int) -> EndpointConfig:
        return EndpointConfig(one.endpoint.model_copy(update={"replicas": replicas}), one.models)

    with (
        replica_pools(backend) as pools,
        ServerThread([one], config=kit.gateway_config(pools=pools)) as server,
    ):
        stop, statuses = threading.Event(), Counter[int]()

        def hammer() -> None:
            with httpx.Client(base_url=server.url, timeout=10.0) as http:
                for _ in range(100_000):
                    if stop.is_set():
                        return
                    statuses[http.post(PATH, json=row()).status_code] += 1

        load = threading.Thread(target=hammer)
        load.start()
        try:
            first = pids(server)
            server.update([scaled(3)])
            grown = pids(server)
            assert first < grown
            assert len(grown) == 3
            assert None not in grown
            time.sleep(0.3)
            server.update([scaled(1)])
            shrunk = pids(server)
            assert len(shrunk) == 1
            assert shrunk <= grown
            time.sleep(0.3)
        finally:
            stop.set()
            load.join(timeout=30)
    assert statuses
    assert set(statuses) == {200}


def test_degraded_tiers_shed_or_fall_back_until_calm() -> None:
    batch = kit.EndpointBuilder("echo", "echo").build()
    batch = EndpointConfig(batch.endpoint.model_copy(update={"tier": "batch"}), batch.models)
    standard = kit.EndpointBuilder("echo-fb", "echo").static_fallback(kit.ECHO_FALLBACK).build()
    plain = kit.EndpointBuilder("steady", "steady").build()  # standard, but no fallback
    with (
        ServerThread([batch, standard, plain], config=kit.gateway_config()) as server,
        httpx.Client(base_url=server.url, timeout=10.0) as http,
    ):

        def ask(name: str) -> httpx.Response:
            return http.post(f"/v1/endpoints/{name}:predict", json=row())

        server.gateway.degrade(frozenset({"batch"}), frozenset({"standard"}))
        shed = ask("echo")
        assert shed.status_code == 429
        assert shed.headers["retry-after"] == "5"
        assert shed.json()["error"]["code"] == "overloaded"
        degraded = ask("echo-fb")
        assert degraded.status_code == 200
        assert degraded.headers["modelplane-fallback"] == "degraded"
        assert degraded.json()["predictions"][0]["n1"] == -1  # the static fallback
        assert ask("steady").headers.get("modelplane-fallback") is None
        server.gateway.degrade(frozenset(), frozenset())
        assert ask("echo").status_code == 200
        assert ask("echo-fb").headers.get("modelplane-fallback") is None


def test_a_retired_version_leaves_the_metrics() -> None:
    def gauges(server: ServerThread) -> set[str]:
        text = httpx.get(f"{server.url}/metrics").text
        return {line.split('model_version="')[1].split('"')[0] for line in text.splitlines()
                if line.startswith("modelplane_gateway_queue_rows{")}  # fmt: skip

    one = kit.EndpointBuilder("echo", "echo").build()
    with ServerThread([routed((50, 50))], config=kit.gateway_config()) as server:
        assert gauges(server) == {"echo:1", "echo:2"}
        v1 = kit.source("echo", 1)
        only = one.endpoint.model_copy(update={"routes": (Route(model=v1.label),)})
        server.update([EndpointConfig(only, {v1.label: v1})])
        assert gauges(server) == {"echo:1"}
