"""End to end over loopback: a stale feature in a real SQLite or Redis online store meets
each policy, and ``explain`` shows the feature set version and the value's age."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.dataplane import gateway_kit as kit

from modelplane.dataplane.codec_v2 import encode_request
from modelplane.dataplane.endpoint_runtime import EndpointConfig
from modelplane.dataplane.server import ServerThread
from modelplane.features.stores import open_online_store
from modelplane.observe.explain import explain
from modelplane.observe.predlog import PredictionLog, PredictionLogConfig
from modelplane.spec.endpoint import FeatureBinding
from modelplane.store.db import open_engine

pytestmark = pytest.mark.timeout(120)

CUSTOMERS = kit.customers(version=2)


def _endpoint(name: str, policy: str) -> EndpointConfig:
    builder = kit.EndpointBuilder(name, "echo", contract=kit.echo_contract(name))
    if policy == "fallback":
        builder.static_fallback(kit.ECHO_FALLBACK)
    binding = FeatureBinding(feature_set="customers:2", entity_key="customer_id", policy=policy)
    builder.settings["features"] = (binding,)
    config: EndpointConfig = builder.build()
    return EndpointConfig(config.endpoint, config.models, {"customers:2": CUSTOMERS})


def _body(customer: str, **extra: Any) -> bytes:
    inputs = kit.echo_inputs(1)
    del inputs["n"]
    inputs["customer_id"] = np.array([customer], dtype=object)
    inputs.update(extra)
    return bytes(encode_request(inputs).body)


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"sqlite:///{tmp_path}/features.db"


def test_each_policy_on_a_stale_feature(store_url: str, sqlite_url: str) -> None:
    store = open_online_store(store_url)
    now = time.time()
    store.write("customers", 2, [("fresh", now - 2, {"n": 41}), ("stale", now - 600, {"n": 9})])
    engine = open_engine(sqlite_url)
    configs = [_endpoint(f"echo-{p}", p) for p in ("fail", "default", "fallback")]
    server = ServerThread(configs, config=kit.gateway_config())
    server.gateway.handler.online_store = store
    server.gateway.sink = PredictionLog(
        engine, PredictionLogConfig(sample_rate=1.0, flush_interval_s=0.05)
    )
    try:
        with server, httpx.Client(base_url=server.url, timeout=10.0) as client:

            def post(endpoint: str, customer: str, rid: str, **extra: Any) -> httpx.Response:
                return client.post(
                    f"/v2/models/{endpoint}/infer",
                    content=_body(customer, **extra),
                    headers={"x-request-id": rid},
                )

            ok = post("echo-fail", "fresh", "fresh-1")
            assert ok.status_code == 200, ok.text
            assert _output(ok, "n1") == [42]
            mine = post("echo-fail", "stale", "mine-1", n=np.array([100], np.int64))
            assert _output(mine, "n1") == [101]  # the request's value wins

            failed = post("echo-fail", "stale", "fail-1")
            assert failed.status_code == 422
            assert "n is stale for key 'stale'" in failed.text
            assert "age" in failed.text

            defaulted = post("echo-default", "stale", "default-1")
            assert defaulted.status_code == 200
            assert defaulted.headers["modelplane-features-defaulted"] == "n"
            assert _output(defaulted, "n1") == [6]

            fallback = post("echo-fallback", "stale", "fallback-1")
            assert fallback.status_code == 200
            assert fallback.headers["modelplane-fallback"] == "features_unavailable"
            assert _output(fallback, "n1") == [-1]

            metrics = client.get("/metrics").text
        assert 'modelplane_gateway_feature_freshness_violations_total{feature="n"' in metrics
        assert 'modelplane_gateway_feature_hits_total{feature_set="customers:2"}' in metrics

        fresh = explain(engine, "fresh-1")["features"]
        assert fresh["sets"] == ["customers:2"]
        assert 1.0 < fresh["ages_s"]["customers:2/n"] < 60.0
        stale = explain(engine, "default-1")["features"]
        assert stale["defaulted"] == ["n"]
        assert stale["ages_s"]["customers:2/n"] > 590
        assert explain(engine, "mine-1")["features"]["from_request"] == ["n"]
        assert explain(engine, "fail-1")["status"] == 422
    finally:
        engine.dispose()
        store.close()


def _output(response: httpx.Response, name: str) -> list[Any]:
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    return list(outputs[name])
