"""The control API's guard: who is calling, and how much they may ask of the server.

One ASGI middleware, in the order a request meets it:

1. **In flight**: at most ``max_in_flight`` requests at once; one more is answered 503
   (``server_busy``) at once instead of queueing behind the rest.
2. **Identity**: the ``Authorization`` header becomes a :class:`Principal` (401
   ``unauthorized`` when it cannot), kept in ``scope["state"]["principal"]`` for the routes,
   which decide what it may do. Without an authenticator every caller is the local operator.
3. **Rate**: a token bucket per token (per client address without authentication); an
   empty bucket answers 429 (``rate_limited``) with ``Retry-After``.
4. **Body size**: a declared ``Content-Length`` over ``max_body_bytes`` is refused before a
   byte is read; a streamed body is counted as it arrives and refused (413
   ``payload_too_large``) the moment it passes the limit, so a huge body never sits in
   memory. Package uploads (:data:`UPLOAD_PATHS`) have a larger limit of their own.

Every refusal has the error shape of :mod:`modelplane.errors`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from modelplane.controlplane.console import CONSOLE_PATHS
from modelplane.errors import HTTP_STATUS, ModelplaneError, Unauthorized
from modelplane.security.auth import Authenticator
from modelplane.security.scopes import Principal, local_operator
from modelplane.types import Clock, SystemClock

__all__ = ["OPEN_PATHS", "UPLOAD_PATHS", "ApiGuard", "ApiLimits", "TokenBucket"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = (
    frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json"}) | CONSOLE_PATHS
)
"""Paths anyone may read: liveness, the API's own description and the console's page and
assets, nothing stored (the console's data comes from guarded routes)."""


UPLOAD_PATHS = frozenset({"/v1/models:push"})
"""Routes that take a package as their body, and so the larger limit."""


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """How much one caller, and all callers together, may ask of the control API."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_upload_bytes: int = 8 * 1024 * 1024 * 1024
    """For :data:`UPLOAD_PATHS` (package uploads), streamed to disk, never held in memory."""
    rate_per_s: float = 20.0
    """Requests per second each token may sustain."""
    burst: int = 60
    """Requests a token may send at once after a quiet spell."""
    max_in_flight: int = 64
    max_callers: int = 10_000
    """Rate buckets kept; the least recently refilled go first."""


class TokenBucket:
    """``burst`` tokens, refilled at ``rate_per_s``; :meth:`take` is pure arithmetic."""

    __slots__ = ("burst", "rate_per_s", "tokens", "updated_at")

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.tokens = float(burst)
        self.updated_at = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there is."""
        elapsed = max(0.0, now - self.updated_at)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate_per_s)
        self.updated_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s


class _Refused(ModelplaneError):
    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.refusal = code
        self.retry_after_s = retry_after_s

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.refusal, "message": self.message, "details": self.details}


class ApiGuard:
    """The middleware; ``actor`` names the local operator when there is no authenticator."""

    def __init__(
        self,
        app: App,
        *,
        limits: ApiLimits,
        authenticator: Authenticator | None,
        actor: str,
        clock: Clock | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.authenticator = authenticator
        self.operator = local_operator(actor)
        self.clock = clock or SystemClock()
        self.in_flight = 0
        self._buckets: dict[str, TokenBucket] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limits.max_in_flight:
            busy = _Refused("server_busy", "the control API is at its limit of requests", 1.0)
            await _refuse(send, busy)
            return
        self.in_flight += 1
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        try:
            if scope["path"] not in OPEN_PATHS:
                principal = await self._identify(headers.get("authorization"))
                scope.setdefault("state", {})["principal"] = principal
                self._check_rate(principal, scope)
            limit = self._limit(scope)
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise self._too_large(limit)
        except ModelplaneError as exc:
            await _refuse(send, exc)
            return
        await self._call_limited(scope, receive, send, limit)

    async def _identify(self, authorization: str | None) -> Principal:
        if self.authenticator is None:
            return self.operator
        return await self.authenticator.authenticate(authorization)

    def _check_rate(self, principal: Principal, scope: Scope) -> None:
        client = scope.get("client")
        key = principal.token_id or f"addr:{client[0] if client else '?'}"
        now = self.clock.monotonic()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            if len(self._buckets) >= self.limits.max_callers:
                del self._buckets[next(iter(self._buckets))]
            bucket = TokenBucket(self.limits.rate_per_s, self.limits.burst, now)
        self._buckets[key] = bucket  # re-inserted: the dict stays in order of use
        wait_s = bucket.take(now)
        if wait_s > 0:
            raise _Refused(
                "rate_limited",
                f"{principal.subject} sent more than {self.limits.rate_per_s:g} requests a"
                f" second (burst {self.limits.burst}); retry after {wait_s:.2f} s",
                wait_s,
            )

    def _limit(self, scope: Scope) -> int:
        if scope["path"] in UPLOAD_PATHS:
            return self.limits.max_upload_bytes
        return self.limits.max_body_bytes

    def _too_large(self, limit: int) -> _Refused:
        return _Refused("payload_too_large", f"the request body is over {limit} bytes")

    async def _call_limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Run the app, counting the body as it arrives; past the limit, answer 413 and
        hand the app a disconnect, so it stops reading and its answer goes nowhere."""
        received = 0
        refused = False
        started = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _refuse(send, self._too_large(limit))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not refused:
                raise


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _refuse(send: Send, exc: ModelplaneError) -> None:
    body = json.dumps({"error": exc.to_dict()}).encode()
    code = exc.to_dict()["code"]
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    if isinstance(exc, Unauthorized):
        headers.append((b"www-authenticate", b'Bearer realm="modelplane"'))
    status = HTTP_STATUS.get(code, 500)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
