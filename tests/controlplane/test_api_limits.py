"""Limits on the control API: body size (declared and streamed), rate per token, in flight.

Body and rate limits are exercised over real HTTP on loopback; the in-flight bound is
exercised on the middleware directly, where a request can be held open on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.kit import serving_app

from modelplane.controlplane.api import create_api
from modelplane.controlplane.limits import ApiGuard, ApiLimits, TokenBucket
from modelplane.registry.service import Registry, open_registry
from modelplane.security.auth import CachedAuthenticator
from modelplane.security.tokens import TokenStore
from modelplane.types import FakeClock

LIMITS = ApiLimits(
    max_body_bytes=4096, max_upload_bytes=16384, rate_per_s=0.5, burst=3, max_in_flight=8
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Registry, dict[str, str]]]:
    registry = open_registry(f"sqlite:///{tmp_path}/state.db", str(tmp_path / "art"), actor="x")
    store = TokenStore(registry.engine)
    tokens = {
        name: store.create(subject=name, team="risk", scopes=["admin"], actor="t").token
        for name in ("first", "second")
    }
    app = create_api(registry, authenticator=CachedAuthenticator(store.verify), limits=LIMITS)
    with serving_app(app) as url:
        yield url, registry, tokens
    registry.close()


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_a_declared_body_over_the_limit_is_413_before_it_is_read(
    served: tuple[str, Registry, dict[str, str]],
) -> None:
    url, registry, tokens = served
    big = {"documents": [{"kind": "Policy", "name": "x" * 8000}]}
    with httpx.Client(base_url=url, timeout=10) as http:
        response = http.post("/v1/apply", json=big, headers=auth(tokens["first"]))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert registry.audit_events(action="policy.apply") == []


def test_a_streamed_body_is_cut_off_at_the_limit(
    served: tuple[str, Registry, dict[str, str]],
) -> None:
    url, registry, tokens = served

    def chunks() -> Iterator[bytes]:
        yield b'{"documents": [{"kind": "Policy", "name": "'
        for _ in range(8):  # 8 KB after the limit of 4 KB, with no Content-Length
            yield b"x" * 1024
        yield b'"}]}'

    with httpx.Client(base_url=url, timeout=10) as http:
        response = http.post("/v1/apply", content=chunks(), headers=auth(tokens["first"]))
        assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert registry.audit_events(action="policy.apply") == []


def test_package_uploads_have_their_own_limit(
    served: tuple[str, Registry, dict[str, str]],
) -> None:
    url, _, tokens = served
    with httpx.Client(base_url=url, timeout=10) as http:
        # over the body limit but under the upload limit: read, then refused as no package
        small = http.post("/v1/models:push", content=b"x" * 8192, headers=auth(tokens["first"]))
        assert small.status_code == 400, small.text
        assert small.json()["error"]["details"][0]["field"] == "body"
        big = http.post("/v1/models:push", content=b"x" * 20_000, headers=auth(tokens["second"]))
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "payload_too_large"


def test_each_token_has_its_own_rate(served: tuple[str, Registry, dict[str, str]]) -> None:
    url, _, tokens = served
    with httpx.Client(base_url=url, timeout=10) as http:
        statuses = [
            http.get("/v1/models", headers=auth(tokens["first"])).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        limited = http.get("/v1/models", headers=auth(tokens["first"]))
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert http.get("/v1/models", headers=auth(tokens["second"])).status_code == 200
        assert http.get("/healthz").status_code == 200  # liveness is never rate limited


def test_token_bucket() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=2, now=0.0)
    assert [bucket.take(0.0), bucket.take(0.0)] == [0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(100.0) == 0.0
    assert bucket.tokens == pytest.approx(1.0)  # refills to the burst, never beyond


def test_requests_over_the_in_flight_bound_are_503() -> None:
    async def scenario() -> list[dict[str, Any]]:
        release = asyncio.Event()
        entered = asyncio.Event()

        async def slow_app(scope: Any, receive: Any, send: Any) -> None:
            entered.set()
            await asyncio.wait_for(release.wait(), timeout=10)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        limits = ApiLimits(max_in_flight=1)
        guard = ApiGuard(slow_app, limits=limits, authenticator=None, actor="me", clock=FakeClock())
        sent: list[dict[str, Any]] = []

        async def request(path: str) -> None:
            scope = {"type": "http", "path": path, "headers": [], "client": ("127.0.0.1", 1)}

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: MutableMapping[str, Any]) -> None:
                sent.append({"path": path, **message})

            await guard(scope, receive, send)

        first = asyncio.create_task(request("/v1/models"))
        await asyncio.wait_for(entered.wait(), timeout=10)
        await request("/v1/audit")
        release.set()
        await asyncio.wait_for(first, timeout=10)
        return sent

    sent = asyncio.run(scenario())
    starts = {m["path"]: m for m in sent if m["type"] == "http.response.start"}
    assert starts["/v1/models"]["status"] == 200
    busy = starts["/v1/audit"]
    assert busy["status"] == 503
    assert (b"retry-after", b"1") in busy["headers"]
    body = next(m["body"] for m in sent if m["path"] == "/v1/audit" and "body" in m)
    assert b'"code": "server_busy"' in body
