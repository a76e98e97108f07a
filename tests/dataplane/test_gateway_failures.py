"""Failure paths over real HTTP: fallbacks, shedding, deadlines and circuit breakers, on every
backend (``tests.kit.backends``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from tests.dataplane import gateway_kit as kit
from tests.kit import wait_for
from tests.kit.backends import BACKENDS, replica_pools

from modelplane.dataplane.codec_v2 import decode_response, encode_request
from modelplane.dataplane.server import ServerThread
from modelplane.types import FakeClock

pytestmark = pytest.mark.timeout(120)
fm = kit.fake_models


CLOCK = FakeClock()
"""What the breakers read: the cool-down passes when a test moves it, not by sleeping."""


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    """The same endpoints on each backend: the gateway's worker processes, replicas placed
    on ``backends.local``, and actors on a real Ray cluster."""
    contract = kit.echo_contract
    endpoints = [
        kit.EndpointBuilder("echo-fb", "echo", contract=contract("echo-fb"))
        .static_fallback(kit.ECHO_FALLBACK)
        .timeout(400)
        .build(),
        kit.EndpointBuilder("echo-cb", "echo", contract=contract("echo-cb"))
        .static_fallback(kit.ECHO_FALLBACK)
        .build(),
        kit.EndpointBuilder("echo-small", "echo").batching(1).queue(1).build(),
        kit.EndpointBuilder("echo-a", "echo").endpoint_fallback("echo-backup").build(),
        kit.EndpointBuilder("echo-backup", "steady").build(),
    ]
    with (
        replica_pools(request.param) as pools,
        ServerThread(endpoints, config=kit.gateway_config(clock=CLOCK, pools=pools)) as running,
    ):
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


def post(client: httpx.Client, endpoint: str, first: float, rows: int = 1) -> httpx.Response:
    encoded = encode_request(kit.echo_inputs(rows, first=first))
    return client.post(f"/v2/models/{endpoint}/infer", content=encoded.body)


def outputs(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return decode_response(response.content).outputs


def test_wrong_output_shape_serves_the_fallback(client: httpx.Client) -> None:
    response = post(client, "echo-fb", fm.WRONG_SHAPE, rows=2)
    assert response.headers["modelplane-fallback"] == "contract_violation"
    assert "modelplane-model-version" not in response.headers
    answer = outputs(response)
    np.testing.assert_array_equal(answer["n1"], [-1, -1])
    assert answer["y"].shape == (2, 4)
    metrics = client.get("/metrics").text
    assert (
        'modelplane_gateway_fallbacks_total{endpoint="echo-fb",reason="contract_violation"}'
        in metrics
    )


@pytest.fixture
def restart_s(request: pytest.FixtureRequest) -> float:
    """How long a killed replica may take to come back: a forked worker starts in
    milliseconds, a Ray actor (a new worker process importing the runtime) in seconds."""
    return 90.0 if request.node.callspec.params.get("server") == "ray" else 10.0


def test_deadline_serves_the_fallback(client: httpx.Client, restart_s: float) -> None:
    # the model takes 1.5 s; without the endpoint's 400 ms deadline it would answer itself
    response = post(client, "echo-fb", fm.VERY_SLOW)
    assert response.headers["modelplane-fallback"] == "timeout"

    # the hung worker was killed; the pool brings a fresh one up and answers again
    def answered_by_the_model() -> httpx.Response | None:
        again = post(client, "echo-fb", 1.0)
        return None if "modelplane-fallback" in again.headers else again

    healthy = wait_for(answered_by_the_model, restart_s, "a fresh worker to answer")
    assert healthy.headers["modelplane-model-version"] == "echo:1"


def test_full_queue_is_429_with_retry_after(server: ServerThread) -> None:
    async def burst() -> list[httpx.Response]:
        encoded = encode_request(kit.echo_inputs(1, first=fm.SLOW))
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
            calls = [
                http.post("/v2/models/echo-small/infer", content=encoded.body) for _ in range(6)
            ]
            return list(await asyncio.gather(*calls))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert 429 in statuses
    assert 200 in statuses
    shed = next(r for r in responses if r.status_code == 429)
    assert int(shed.headers["retry-after"]) >= 1
    assert "error" in shed.json()


def test_circuit_opens_then_half_opens_and_recovers(client: httpx.Client) -> None:
    for _ in range(4):  # the model raises: each answer is the fallback, each a failure
        response = post(client, "echo-cb", fm.RAISE)
        assert response.headers["modelplane-fallback"] == "worker_failed"
    # open: even a good request is answered by the fallback, without reaching the model
    response = post(client, "echo-cb", 1.0)
    assert response.headers["modelplane-fallback"] == "circuit_open"
    CLOCK.advance(0.6)  # past the cool-down: the next request is a probe
    probe = post(client, "echo-cb", 1.0)
    assert "modelplane-fallback" not in probe.headers
    assert probe.headers["modelplane-model-version"] == "echo:1"
    again = post(client, "echo-cb", 1.0)
    assert "modelplane-fallback" not in again.headers
    metrics = client.get("/metrics").text
    assert 'reason="circuit_open"' in metrics


def test_open_circuit_falls_back_to_another_endpoint(client: httpx.Client) -> None:
    for _ in range(4):  # echo-a's model raises; its backup answers instead
        response = post(client, "echo-a", fm.RAISE)
        assert response.headers["modelplane-fallback"] == "worker_failed"
        assert response.headers["modelplane-model-version"] == "steady:1"
    response = post(client, "echo-a", 1.0)
    assert response.headers["modelplane-fallback"] == "circuit_open"
    assert response.headers["modelplane-model-version"] == "steady:1"
    np.testing.assert_array_equal(outputs(response)["n1"], [1])


def test_model_error_without_fallback_is_503(client: httpx.Client) -> None:
    response = post(client, "echo-small", fm.RAISE)
    assert response.status_code == 503
    assert "negative two" in response.json()["error"]
