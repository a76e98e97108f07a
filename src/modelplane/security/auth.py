"""Authenticating requests at the edges: the ``Authorization`` header to a principal.

Both planes use :class:`Authenticator`: the control API and the gateway's predict routes.
The gateway must not slow down for it, so :class:`CachedAuthenticator` keeps what the
store said about a token (valid or not) for ``ttl_s`` seconds: a cached check is one
dictionary lookup. The price is that a revoked token keeps working for up to ``ttl_s``
in a process that verified it just before; an expired one stops on time, since the
principal carries its expiry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from modelplane.errors import Unauthorized
from modelplane.security.scopes import Action, Principal, Scope, authorize
from modelplane.types import Clock, SystemClock

__all__ = [
    "Authenticator",
    "CachedAuthenticator",
    "PredictAuthorizer",
    "PredictGate",
    "bearer_token",
]

_BEARER = "bearer "


class Authenticator(Protocol):
    """Turns an ``Authorization`` header into a principal, or raises ``Unauthorized``."""

    async def authenticate(self, authorization: str | None) -> Principal: ...


def bearer_token(authorization: str | None) -> str:
    """The token of ``Authorization: Bearer <token>``, or :class:`Unauthorized`."""
    if not authorization:
        raise Unauthorized("no token: send 'Authorization: Bearer <token>'")
    if authorization[:7].lower() != _BEARER:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return authorization[7:].strip()


class CachedAuthenticator:
    """Verifies tokens with ``verify`` (run in a thread: it reads the store) and remembers
    each answer for ``ttl_s`` seconds, at most ``max_entries`` of them."""

    def __init__(
        self,
        verify: Callable[[str], Principal],
        *,
        ttl_s: float = 5.0,
        max_entries: int = 10_000,
        clock: Clock | None = None,
    ) -> None:
        self._verify = verify
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock or SystemClock()
        self._cache: dict[str, tuple[float, Principal | Unauthorized]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        hit = self._cache.get(token)
        if hit is not None and hit[0] > self._clock.monotonic():
            return self._answer(hit[1])
        try:
            answer: Principal | Unauthorized = await asyncio.to_thread(self._verify, token)
        except Unauthorized as exc:
            answer = exc
        self._remember(token, answer)
        return self._answer(answer)

    def verify_now(self, authorization: str | None) -> Principal:
        """The same check without the cache or a thread, for synchronous callers."""
        return self._verify(bearer_token(authorization))

    def _answer(self, answer: Principal | Unauthorized) -> Principal:
        if isinstance(answer, Unauthorized):
            raise Unauthorized(answer.message)
        expires_at = answer.expires_at
        if expires_at is not None and expires_at <= self._clock.wall():
            raise Unauthorized(f"token {answer.token_id} expired")
        return answer

    def _remember(self, token: str, answer: Principal | Unauthorized) -> None:
        if len(self._cache) >= self._max_entries:
            # Oldest first (dicts keep insertion order): a flood of made-up tokens only
            # pushes out entries that were about to lapse anyway.
            for stale in list(self._cache)[: max(1, self._max_entries // 10)]:
                del self._cache[stale]
        self._cache[token] = (self._clock.monotonic() + self._ttl_s, answer)


class PredictAuthorizer(Protocol):
    """What the gateway asks before a prediction: ``allowed`` answers from memory without
    waiting (``False`` when it does not know); ``check`` finds out, raising
    ``Unauthorized`` or ``Forbidden``."""

    def allowed(self, authorization: str | None, endpoint: str, team: str) -> bool: ...

    async def check(self, authorization: str | None, endpoint: str, team: str) -> None: ...


class PredictGate:
    """The gateway's check: the token's principal may ``predict`` on the endpoint of
    ``team``. A granted ``(header, endpoint, team)`` is remembered for ``ttl_s`` (never past
    the token's expiry), so the check on the hot path is one tuple and one lookup."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        ttl_s: float = 5.0,
        max_entries: int = 10_000,
        clock: Clock | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock or SystemClock()
        self._granted: dict[tuple[str | None, str, str], float] = {}

    def allowed(self, authorization: str | None, endpoint: str, team: str) -> bool:
        until = self._granted.get((authorization, endpoint, team))
        return until is not None and until > self._clock.monotonic()

    async def check(self, authorization: str | None, endpoint: str, team: str) -> None:
        principal = await self._authenticator.authenticate(authorization)
        authorize(principal, Action(Scope.PREDICT, f"predict {endpoint}", (team,), endpoint))
        now = self._clock.monotonic()
        until = now + self._ttl_s
        if principal.expires_at is not None:
            until = min(until, now + principal.expires_at - self._clock.wall())
        if len(self._granted) >= self._max_entries:
            for stale in list(self._granted)[: max(1, self._max_entries // 10)]:
                del self._granted[stale]
        self._granted[(authorization, endpoint, team)] = until
