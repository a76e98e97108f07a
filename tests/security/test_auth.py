"""The cached authenticator: one store lookup per token per ``ttl_s``, answers kept both ways."""

from __future__ import annotations

import asyncio

import pytest

from modelplane.errors import Unauthorized
from modelplane.security.auth import CachedAuthenticator, bearer_token
from modelplane.security.scopes import Principal, Scope
from modelplane.types import FakeClock

GOOD = "mp_0123456789abcdef_" + "s" * 43


class CountingVerifier:
    """Stands in for the store: says which tokens are valid, counts the lookups."""

    def __init__(self, clock: FakeClock) -> None:
        self.calls = 0
        self.revoked = False
        self.clock = clock

    def __call__(self, token: str) -> Principal:
        self.calls += 1
        if token != GOOD or self.revoked:
            raise Unauthorized("the token is not valid")
        expires = self.clock.wall() + 30
        return Principal("svc", "risk", frozenset({Scope.PREDICT}), expires_at=expires)


def run(auth: CachedAuthenticator, header: str | None) -> Principal:
    return asyncio.run(auth.authenticate(header))


def test_answers_are_cached_for_ttl() -> None:
    clock = FakeClock()
    verifier = CountingVerifier(clock)
    auth = CachedAuthenticator(verifier, ttl_s=5.0, clock=clock)
    for _ in range(3):
        assert run(auth, f"Bearer {GOOD}").subject == "svc"
    assert verifier.calls == 1
    verifier.revoked = True
    clock.advance(4.9)
    assert run(auth, f"bearer {GOOD}").subject == "svc"  # still within the ttl
    clock.advance(0.2)
    with pytest.raises(Unauthorized):
        run(auth, f"Bearer {GOOD}")
    assert verifier.calls == 2


def test_refusals_are_cached_too() -> None:
    clock = FakeClock()
    verifier = CountingVerifier(clock)
    auth = CachedAuthenticator(verifier, clock=clock)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            run(auth, "Bearer mp_ffffffffffffffff_" + "x" * 43)
    assert verifier.calls == 1


def test_an_expiry_inside_the_ttl_is_honoured() -> None:
    clock = FakeClock()
    auth = CachedAuthenticator(CountingVerifier(clock), ttl_s=60.0, clock=clock)
    run(auth, f"Bearer {GOOD}")
    clock.advance(31)
    with pytest.raises(Unauthorized, match="expired"):
        run(auth, f"Bearer {GOOD}")


def test_the_cache_is_bounded() -> None:
    clock = FakeClock()
    verifier = CountingVerifier(clock)
    auth = CachedAuthenticator(verifier, max_entries=10, clock=clock)
    for index in range(50):
        with pytest.raises(Unauthorized):
            run(auth, f"Bearer mp_{index:016x}_" + "x" * 43)
    run(auth, f"Bearer {GOOD}")
    run(auth, f"Bearer {GOOD}")
    assert verifier.calls == 51


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Token x"])
def test_the_header_must_be_bearer(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        bearer_token(header)


def test_the_predict_gate_remembers_grants_only() -> None:
    from modelplane.errors import Forbidden
    from modelplane.security.auth import PredictGate

    clock = FakeClock()
    verifier = CountingVerifier(clock)  # principals of team risk, expiring in 30 s
    gate = PredictGate(CachedAuthenticator(verifier, clock=clock), ttl_s=60.0, clock=clock)
    header = f"Bearer {GOOD}"
    assert not gate.allowed(header, "fraud", "risk")
    asyncio.run(gate.check(header, "fraud", "risk"))
    assert gate.allowed(header, "fraud", "risk")
    assert not gate.allowed(header, "churn", "risk")  # another endpoint: checked afresh
    with pytest.raises(Forbidden):
        asyncio.run(gate.check(header, "churn", "growth"))
    assert not gate.allowed(header, "churn", "growth")
    clock.advance(31)  # past the token's expiry, within the gate's ttl
    assert not gate.allowed(header, "fraud", "risk")
