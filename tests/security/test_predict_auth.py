"""The gateway's predict routes with token checks on, over real HTTP on loopback.

Every predict route refuses a missing, malformed, expired or revoked token (401), and a
token without ``predict``, of another team, or limited to another endpoint (403), before
the request is read, counted or logged; a token that may predicts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.dataplane import gateway_kit as kit

from modelplane.dataplane.codec_v2 import encode_request
from modelplane.dataplane.server import ServerThread
from modelplane.security.auth import CachedAuthenticator, PredictGate
from modelplane.security.tokens import TokenStore
from modelplane.store.db import open_engine
from modelplane.types import FakeClock

pytestmark = pytest.mark.timeout(120)

ECHO_ROW = {"x": [1.0, 2.0, 3.0, 4.0], "n": 5, "s": "hello", "b": True}


def _v2_body() -> tuple[bytes, dict[str, str]]:
    encoded = encode_request(kit.echo_inputs(1))
    return encoded.body, {"content-type": encoded.content_type}


ROUTES: list[tuple[str, str]] = [
    ("v2", "/v2/models/echo/infer"),
    ("v2 version", "/v2/models/echo/versions/echo:1/infer"),
    ("records", "/v1/endpoints/echo:predict"),
]

REFUSED = [
    ("none", 401),
    ("malformed", 401),
    ("expired", 401),
    ("revoked", 401),
    ("reader", 403),
    ("other-team", 403),
    ("other-endpoint", 403),
]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TokenStore, dict[str, str]]]:
    folder: Path = tmp_path_factory.mktemp("tokens")
    engine = open_engine(f"sqlite:///{folder}/state.db")
    store = TokenStore(engine)

    def issue(team: str, scope: str, **kwargs: Any) -> str:
        return store.create(subject="svc", team=team, scopes=[scope], actor="t", **kwargs).token

    issued = {
        "caller": issue("test", "predict"),
        "limited": issue("test", "predict", endpoints=["echo"]),
        "reader": issue("test", "read"),
        "other-team": issue("growth", "predict"),
        "other-endpoint": issue("test", "predict", endpoints=["lr"]),
        "revoked": issue("test", "predict"),
        "malformed": "mp_0123_short",
    }
    store.revoke(issued["revoked"].split("_")[1], actor="t")
    past = TokenStore(engine, clock=FakeClock(start=time.time() - 3600))
    issued["expired"] = past.create(
        subject="svc", team="test", scopes=["predict"], actor="t", expires_in_s=60
    ).token
    yield store, issued
    engine.dispose()


@pytest.fixture(scope="module")
def server(tokens: tuple[TokenStore, dict[str, str]]) -> Iterator[ServerThread]:
    endpoints = [
        kit.EndpointBuilder("echo", "echo", contract=kit.echo_contract()).build(),
        kit.EndpointBuilder("lr", "sklearn").build(),
    ]
    running = ServerThread(endpoints, config=kit.gateway_config())
    running.gateway.auth = PredictGate(CachedAuthenticator(tokens[0].verify))
    with running:
        yield running


def _call(http: httpx.Client, kind: str, path: str, token: str | None) -> httpx.Response:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    if kind == "records":
        return http.post(path, json={"instances": [ECHO_ROW]}, headers=headers)
    body, content_type = _v2_body()
    return http.post(path, content=body, headers={**headers, **content_type})


def test_every_predict_route_refuses_bad_callers_before_counting(
    server: ServerThread, tokens: tuple[TokenStore, dict[str, str]]
) -> None:
    issued = tokens[1]
    counted = dict(server.gateway.metrics.requests)
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        for kind, path in ROUTES:
            for caller, status in REFUSED:
                response = _call(http, kind, path, issued.get(caller))
                where = f"{kind} as {caller}"
                assert response.status_code == status, f"{where}: {response.text}"
                if kind == "records":
                    code = "unauthorized" if status == 401 else "forbidden"
                    assert response.json()["error"]["code"] == code, where
                else:  # the v2 protocol's error shape is a message
                    assert response.json()["error"], where
    assert dict(server.gateway.metrics.requests) == counted


def test_a_caller_who_may_predicts(
    server: ServerThread, tokens: tuple[TokenStore, dict[str, str]]
) -> None:
    issued = tokens[1]
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        for kind, path in ROUTES:
            for caller in ("caller", "limited"):
                response = _call(http, kind, path, issued[caller])
                assert response.status_code == 200, f"{kind} as {caller}: {response.text}"
        # metadata and health stay open: load balancers and clients discover without a token
        assert http.get("/v2/models/echo").status_code == 200
        assert http.get("/v2/health/live").status_code == 200
