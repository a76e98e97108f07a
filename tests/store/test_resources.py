from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from modelplane.errors import Conflict, NotFound
from modelplane.store import audit
from modelplane.store.db import open_engine, read_session
from modelplane.store.resources import ResourceStore


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def test_apply_is_idempotent_and_audited(engine: Engine) -> None:
    store = ResourceStore(engine)
    first = store.apply("Endpoint", "fraud", {"a": 1}, actor="alice", reason="new")
    again = store.apply("Endpoint", "fraud", {"a": 1}, actor="alice")
    changed = store.apply("Endpoint", "fraud", {"a": 2}, actor="bob")
    assert (first.outcome, again.outcome, changed.outcome) == ("created", "unchanged", "configured")
    assert changed.resource.generation == 2
    assert changed.before == {"a": 1}
    with read_session(engine) as session:
        events = audit.list_events(session)
        audit.verify(session)
    assert [(e.action, e.actor, e.after) for e in events] == [
        ("endpoint.apply", "bob", {"a": 2}),
        ("endpoint.apply", "alice", {"a": 1}),
    ]


def test_expected_generation_guards_concurrent_edits(engine: Engine) -> None:
    store = ResourceStore(engine)
    store.apply("Policy", "default", {"x": 1}, actor="a")
    store.apply("Policy", "default", {"x": 2}, actor="b", expected_generation=1)
    with pytest.raises(Conflict, match="generation 2"):
        store.apply("Policy", "default", {"x": 3}, actor="c", expected_generation=1)
    assert store.get("Policy", "default").spec == {"x": 2}


def test_status_list_and_delete(engine: Engine) -> None:
    store = ResourceStore(engine)
    store.apply("Endpoint", "b", {"n": 1}, actor="a")
    store.apply("Endpoint", "a", {"n": 1}, actor="a")
    assert store.set_status("Endpoint", "a", {"ready": True})
    assert [r.name for r in store.list("Endpoint")] == ["a", "b"]
    assert store.get("Endpoint", "a").status == {"ready": True}
    store.delete("Endpoint", "a", actor="a", reason="gone")
    assert not store.set_status("Endpoint", "a", {"ready": False})
    with pytest.raises(NotFound):
        store.get("Endpoint", "a")
    with pytest.raises(NotFound):
        store.delete("Endpoint", "a", actor="a")
