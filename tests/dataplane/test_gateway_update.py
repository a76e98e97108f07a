"""Endpoints change while requests flow: new ones start before the table swaps."""

from __future__ import annotations

import threading

import httpx
import pytest
from tests.dataplane import gateway_kit as kit

from modelplane.dataplane.endpoint_runtime import EndpointConfig, ModelSource
from modelplane.dataplane.server import ServerThread
from modelplane.errors import WorkerFailed
from modelplane.types import Digest

pytestmark = pytest.mark.timeout(180)

ROW = {"instances": [{"x": [1.0, 2.0, 3.0, 4.0], "n": 5, "s": "hello", "b": True}]}


def hammer(url: str, path: str, stop: threading.Event, codes: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=10.0) as http:
        for _ in range(100_000):
            if stop.is_set():
                return
            codes.append(http.post(path, json=ROW).status_code)


def test_add_and_remove_endpoints_under_load() -> None:
    first = kit.EndpointBuilder("echo", "echo").build()
    second = kit.EndpointBuilder("echo2", "echo").build()
    with ServerThread([first], config=kit.gateway_config()) as server:
        stop, codes = threading.Event(), list[int]()
        load = threading.Thread(
            target=hammer, args=(server.url, "/v1/endpoints/echo:predict", stop, codes)
        )
        load.start()
        try:
            server.update([first, second])
            with httpx.Client(base_url=server.url, timeout=10.0) as http:
                assert http.post("/v1/endpoints/echo2:predict", json=ROW).status_code == 200
                # changing an endpoint replaces its workers; requests keep being answered
                server.update([kit.EndpointBuilder("echo", "echo").batching(8).build(), second])
                server.update([second])
                assert http.post("/v1/endpoints/echo:predict", json=ROW).status_code == 404
        finally:
            stop.set()
            load.join(timeout=30)
    served = [c for c in codes if c != 404]
    assert served
    assert set(served) == {200}
    assert server.gateway.serving("echo2") is False  # stopped with the server


def tampered(config: EndpointConfig) -> EndpointConfig:
    """The same endpoint, but its package no longer matches the digest it resolved to: its
    workers refuse to load it."""
    [(ref, model)] = config.models.items()
    wrong = ModelSource(model.label, model.directory, model.manifest, Digest("sha256:" + "0" * 64))
    return EndpointConfig(config.endpoint, {ref: wrong})


def test_an_endpoint_that_fails_to_start_changes_nothing_for_the_others() -> None:
    first = kit.EndpointBuilder("echo", "echo").build()
    broken = tampered(kit.EndpointBuilder("broken", "echo").build())
    changed = kit.EndpointBuilder("echo", "echo").batching(8).build()
    with ServerThread([first], config=kit.gateway_config()) as server:
        with pytest.raises(WorkerFailed):
            server.update([changed, broken])
        assert server.gateway.handler.endpoints["echo"].endpoint == changed.endpoint
        assert "digest" in (server.gateway.start_failure("broken") or "")
        with httpx.Client(base_url=server.url, timeout=10.0) as http:
            assert http.post("/v1/endpoints/echo:predict", json=ROW).status_code == 200
            # told to serve it, so callers are asked to retry: never a 404
            response = http.post("/v1/endpoints/broken:predict", json=ROW)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "not_ready"
            assert http.get("/v2/models/broken/ready").status_code == 503
            assert http.get("/v2/models/echo/ready").status_code == 200
            # one endpoint down does not take the healthy ones out of a load balancer
            assert http.get("/v2/health/ready").status_code == 200
        # the failed start left no metrics series behind
        assert b'endpoint="broken"' not in server.gateway.metrics.render()


def test_readiness_waits_for_what_the_gateway_was_told_to_serve() -> None:
    echo = kit.EndpointBuilder("echo", "echo").build()
    with ServerThread([], config=kit.gateway_config()) as server:
        server.gateway.expect(["echo"])
        with httpx.Client(base_url=server.url, timeout=10.0) as http:
            assert http.get("/v2/health/ready").status_code == 503
            response = http.post("/v1/endpoints/echo:predict", json=ROW)
            assert response.status_code == 503
            assert "starting" in response.json()["error"]["message"]
            server.update([echo])
            assert http.get("/v2/health/ready").status_code == 200
            assert http.post("/v1/endpoints/echo:predict", json=ROW).status_code == 200
            # an endpoint added later has its own readiness, not the gateway's
            server.gateway.expect(["echo", "later"])
            assert http.get("/v2/health/ready").status_code == 200
            assert http.get("/v2/models/later/ready").status_code == 503
