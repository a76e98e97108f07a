"""Tokens in the real state store (SQLite and PostgreSQL): hashed, expiring, revocable."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from modelplane.errors import InvalidSpec, NotFound, Unauthorized
from modelplane.security.scopes import Scope
from modelplane.security.tokens import (
    TokenStore,
    parse_duration,
    read_token_file,
    split_token,
    write_token_file,
)
from modelplane.store import audit
from modelplane.store.db import open_engine, read_session
from modelplane.store.schema import ApiTokenRow
from modelplane.types import FakeClock


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> TokenStore:
    return TokenStore(engine)


def test_a_token_is_shown_once_and_stored_hashed(store: TokenStore) -> None:
    issued = store.create(
        subject="ci-bot", team="risk", scopes=["deploy", "read"], actor="alice", reason="ci"
    )
    token_id, secret = split_token(issued.token)
    assert token_id == issued.record.id
    with read_session(store.engine) as session:
        row = session.get_one(ApiTokenRow, token_id)
        assert secret not in row.secret_hash
        assert row.secret_hash != secret
        assert len(row.secret_hash) == 64
    principal = store.verify(issued.token)
    assert (principal.subject, principal.team) == ("ci-bot", "risk")
    assert principal.scopes == {Scope.DEPLOY, Scope.READ}
    assert principal.token_id == token_id
    with read_session(store.engine) as session:
        events = audit.list_events(session, subject=f"token/{token_id}")
    assert [(e.action, e.actor) for e in events] == [("token.create", "alice")]
    assert "secret" not in str(events[0].after)
    assert secret not in str(events[0].after)


def test_a_wrong_secret_an_unknown_id_and_garbage_are_refused(store: TokenStore) -> None:
    issued = store.create(subject="s", team="risk", scopes=["read"], actor="a")
    token_id, secret = split_token(issued.token)
    forged = f"mp_{token_id}_{'A' * len(secret)}"
    for bad in (forged, f"mp_{'0' * 16}_{secret}", "mp_short_x", "Bearer", ""):
        with pytest.raises(Unauthorized):
            store.verify(bad)


def test_expired_and_revoked_tokens_are_refused(engine: Engine) -> None:
    clock = FakeClock(start=2_000_000_000.0)
    store = TokenStore(engine, clock=clock)
    short = store.create(subject="s", team="risk", scopes=["read"], actor="a", expires_in_s=60)
    kept = store.create(subject="t", team="risk", scopes=["read"], actor="a")
    assert store.verify(short.token).expires_at == pytest.approx(2_000_000_060.0)
    clock.advance(61)
    with pytest.raises(Unauthorized, match="expired"):
        store.verify(short.token)
    store.revoke(kept.record.id, actor="alice", reason="leaked")
    store.revoke(kept.record.id, actor="alice")  # again: nothing more happens
    with pytest.raises(Unauthorized, match="revoked"):
        store.verify(kept.token)
    assert [r.id for r in store.list()] == [short.record.id]
    assert {r.id for r in store.list(include_revoked=True)} == {short.record.id, kept.record.id}
    with read_session(store.engine) as session:
        revokes = audit.list_events(session, action="token.revoke")
    assert len(revokes) == 1
    assert revokes[0].reason == "leaked"
    with pytest.raises(NotFound):
        store.revoke("0" * 16, actor="alice")


def test_bad_input_names_the_field(store: TokenStore) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"team": "Risk Team"}, "team"),
        ({"scopes": ["root"]}, "scopes[0]"),
        ({"endpoints": ["ok", "Not OK"]}, "endpoints[1]"),
        ({"subject": " "}, "subject"),
    ]
    for change, field in cases:
        kwargs: dict[str, Any] = {"subject": "s", "team": "risk", "scopes": ["read"], **change}
        with pytest.raises(InvalidSpec) as caught:
            store.create(actor="a", **kwargs)
        assert caught.value.details[0]["field"] == field
    with read_session(store.engine) as session:
        assert session.scalars(select(ApiTokenRow)).all() == []


def test_predict_tokens_can_be_limited_to_endpoints(store: TokenStore) -> None:
    issued = store.create(
        subject="checkout", team="risk", scopes=["predict"], endpoints=["fraud-score"], actor="a"
    )
    assert store.verify(issued.token).endpoints == frozenset({"fraud-score"})


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 2_592_000), ("12h", 43_200), ("15m", 900), ("2w", 1_209_600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0d", "30", "1y", "-1d", "d"])
def test_bad_durations_name_the_field(text: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_duration(text, field="--expires-in")
    assert caught.value.details[0]["field"] == "--expires-in"


def test_the_token_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / "token"
    assert read_token_file(path) is None
    write_token_file(path, "mp_0123456789abcdef_secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_token_file(path) == "mp_0123456789abcdef_secret"
