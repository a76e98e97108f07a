"""The gateway over loopback keeps a sampled request, an error and a fallback, with timings."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.dataplane import gateway_kit as kit

from modelplane.dataplane.codec_v2 import encode_request
from modelplane.dataplane.server import ServerThread
from modelplane.observe.predlog import PredictionLog, PredictionLogConfig, find_predictions
from modelplane.store.db import open_engine

pytestmark = pytest.mark.timeout(120)
fm = kit.fake_models


def post(client: httpx.Client, endpoint: str, first: float, request_id: str, rows: int = 1) -> Any:
    body = encode_request(kit.echo_inputs(rows, first=first)).body
    headers = {"x-request-id": request_id}
    return client.post(f"/v2/models/{endpoint}/infer", content=body, headers=headers)


def test_sampled_error_and_fallback_land_in_the_log(sqlite_url: str) -> None:
    engine = open_engine(sqlite_url)
    endpoints = [
        kit.EndpointBuilder("echo", "echo", contract=kit.echo_contract("echo")).build(),
        kit.EndpointBuilder("echo-fb", "echo", contract=kit.echo_contract("echo-fb"))
        .static_fallback(kit.ECHO_FALLBACK)
        .build(),
    ]
    server = ServerThread(endpoints, config=kit.gateway_config())
    server.gateway.sink = PredictionLog(
        engine, PredictionLogConfig(sample_rate=1.0, flush_interval_s=0.05)
    )
    with server, httpx.Client(base_url=server.url, timeout=10.0) as client:
        assert post(client, "echo", 1.0, "ok-1").status_code == 200
        assert post(client, "echo", fm.RAISE, "err-1").status_code == 503
        fallback = post(client, "echo-fb", fm.WRONG_SHAPE, "fb-1", rows=2)
        assert fallback.headers["modelplane-fallback"] == "contract_violation"
    # stopping the gateway flushed the log
    (ok,) = find_predictions(engine, "ok-1")
    (err,) = find_predictions(engine, "err-1")
    (fb,) = find_predictions(engine, "fb-1")
    engine.dispose()

    echo = kit.source("echo")
    assert ok["status"] == 200
    assert ok["error_code"] is None
    assert ok["fallback_reason"] is None
    assert (ok["model_version"], ok["digest"]) == ("echo:1", echo.digest)
    assert (ok["route"], ok["route_kind"], ok["batch_size"]) == ("echo:1", "stable", 1)
    assert (ok["contract"], ok["contract_version"]) == ("echo", 1)
    assert ok["compute_ms"] > 0

    assert (err["status"], err["error_code"]) == (503, "worker_failed")
    assert "negative two" in err["detail"]
    assert err["model_version"] == "echo:1"

    assert (fb["status"], fb["fallback_reason"], fb["batch_size"]) == (200, "contract_violation", 2)
    assert "broke contract" in fb["detail"]
    for row in (ok, err, fb):
        parts = row["queue_ms"] + row["batch_ms"] + row["compute_ms"]
        assert 0 < parts <= row["total_ms"], row
