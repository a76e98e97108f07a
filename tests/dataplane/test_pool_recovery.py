"""Recovery over real HTTP: once a route's pool has a warm replica again after having none,
its open breaker lets traffic back at once, without waiting out the cool-down."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.dataplane import gateway_kit as kit
from tests.kit import wait_for

from modelplane.dataplane.codec_v2 import encode_request
from modelplane.dataplane.pool import ReplicaState, WorkerPool, forkserver
from modelplane.dataplane.server import ServerThread
from modelplane.types import FakeClock

pytestmark = pytest.mark.timeout(120)
fm = kit.fake_models

CLOCK = FakeClock()
"""Never advanced: an open breaker's cool-down never passes in these tests."""


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    builder = kit.EndpointBuilder("echo-back", "echo", contract=kit.echo_contract("echo-back"))
    builder.settings["replicas"] = 2
    endpoint = builder.static_fallback(kit.ECHO_FALLBACK).build()
    with ServerThread([endpoint], config=kit.gateway_config(clock=CLOCK)) as running:
        yield running


def post(client: httpx.Client, first: float) -> httpx.Response:
    encoded = encode_request(kit.echo_inputs(1, first=first))
    return client.post("/v2/models/echo-back/infer", content=encoded.body)


def the_pool(server: ServerThread) -> WorkerPool:
    (route,) = server.gateway.handler.endpoints["echo-back"].routes
    pool = route.target.pool
    assert isinstance(pool, WorkerPool)  # this gateway runs local worker processes
    return pool


def ready_pids(pool: WorkerPool) -> list[int]:
    return [r.pid for r in pool.replicas() if r.state is ReplicaState.READY and r.pid is not None]


def test_an_open_breaker_probes_as_soon_as_a_replica_is_warm_again(server: ServerThread) -> None:
    pool = the_pool(server)
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        for _ in range(4):  # the model raises: the breaker opens
            assert post(client, fm.RAISE).headers["modelplane-fallback"] == "worker_failed"
        assert post(client, 1.0).headers["modelplane-fallback"] == "circuit_open"
        # every replica dies and comes back, while the cool-down (clock never moved) holds
        victims = ready_pids(pool)
        assert len(victims) == 2
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: len(ready_pids(pool)) == 2 and not set(ready_pids(pool)) & set(victims),
            30,
            "both replicas to restart",
        )
        probe = post(client, 1.0)
        assert "modelplane-fallback" not in probe.headers
        assert probe.headers["modelplane-model-version"] == "echo:1"
        assert "modelplane-fallback" not in post(client, 1.0).headers


@pytest.mark.slow
def test_a_runtime_put_later_gets_a_warm_template() -> None:
    """The forkserver of a gateway started with nothing is replaced by one that imported
    scikit-learn (without torch) once an sklearn endpoint is put; its worker serves."""
    config = kit.EndpointBuilder("sk", "sklearn").build()
    with ServerThread([], config=kit.gateway_config()) as running:
        assert running.gateway.loop is not None
        update = running.gateway.update([config])
        asyncio.run_coroutine_threadsafe(update, running.gateway.loop).result(timeout=90)
        assert "modelplane.dataplane.pool.warm_sklearn" in forkserver.preloaded()
        template = forkserver.pid()
        assert template is not None
        maps = Path(f"/proc/{template}/maps").read_text()
        assert "/sklearn/" in maps
        assert "/torch/lib/" not in maps
        (route,) = running.gateway.handler.endpoints["sk"].routes
        (worker,) = [r.pid for r in route.target.pool.replicas() if r.pid is not None]
        assert Path(f"/proc/{worker}/stat").read_text().rpartition(")")[2].split()[1] == str(
            template
        )
