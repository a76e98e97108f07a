"""The audit log: a linear hash chain that names the first event tampered with."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from modelplane.errors import IntegrityError, InvalidSpec
from modelplane.store import audit
from modelplane.store.db import open_engine, read_session, write_session

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


def event(n: int, *, actor: str = "alice", action: str = "model.push") -> audit.AuditEvent:
    return audit.AuditEvent(
        actor=actor,
        action=action,
        subject=f"fraud:{n}",
        at=T0 + timedelta(seconds=n, microseconds=123),
        reason=f"change {n} — naïve café",
        before={"version": n - 1} if n > 1 else None,
        after={"version": n, "weights": [0.1, 2.5e-7, n]},
    )


def append_all(engine: Engine, count: int) -> None:
    for n in range(1, count + 1):
        with write_session(engine) as session:
            audit.append(session, event(n))


def assert_broken_at(engine: Engine, seq: int) -> None:
    with pytest.raises(IntegrityError) as info, read_session(engine) as session:
        audit.verify(session)
    assert f"seq {seq}:" in str(info.value)
    assert info.value.details[0]["seq"] == seq


def tamper(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def test_appends_chain_and_verify(engine: Engine) -> None:
    with write_session(engine) as session:
        first = audit.append(session, event(1))
        second = audit.append(session, event(2))
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == "0" * 64
    assert second.prev_hash == first.hash
    with read_session(engine) as session:
        audit.verify(session)


def test_a_rolled_back_transaction_leaves_no_event(engine: Engine) -> None:
    def failing_change() -> None:
        with write_session(engine) as session:
            audit.append(session, event(1))
            raise RuntimeError("the change failed after its event was written")

    with pytest.raises(RuntimeError):
        failing_change()
    append_all(engine, 1)
    with read_session(engine) as session:
        assert [r.seq for r in audit.list_events(session)] == [1]
        audit.verify(session)


def test_stored_values_read_back_as_hashed(engine: Engine) -> None:
    moment = datetime(2025, 3, 1, 13, 0, 0, 999_999, tzinfo=UTC)
    with write_session(engine) as session:
        written = audit.append(
            session,
            audit.AuditEvent(
                "bob", "x", "s", moment, before={"b": (1, 2), "a": 1.5}, after=[None, True]
            ),
        )
    assert written.before == {"a": 1.5, "b": [1, 2]}
    with read_session(engine) as session:
        (stored,) = audit.list_events(session)
        audit.verify(session)
    assert stored == written
    assert stored.at == moment


def test_non_json_data_and_naive_times_are_refused(engine: Engine) -> None:
    with pytest.raises(InvalidSpec), write_session(engine) as session:
        audit.append(session, audit.AuditEvent("a", "b", "c", T0, after={"x": float("nan")}))
    with pytest.raises(InvalidSpec), write_session(engine) as session:
        audit.append(session, audit.AuditEvent("a", "b", "c", T0.replace(tzinfo=None)))


def test_an_edited_event_is_named(engine: Engine) -> None:
    append_all(engine, 5)
    tamper(engine, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")
    assert_broken_at(engine, 3)


def test_an_edited_payload_is_named(engine: Engine) -> None:
    append_all(engine, 5)
    tamper(engine, """UPDATE audit_events SET "after" = '{"version": 99}' WHERE seq = 4""")
    assert_broken_at(engine, 4)


def test_a_deleted_event_is_named(engine: Engine) -> None:
    append_all(engine, 5)
    tamper(engine, "DELETE FROM audit_events WHERE seq = 2")
    assert_broken_at(engine, 2)


def test_a_deleted_tail_is_named(engine: Engine) -> None:
    append_all(engine, 5)
    tamper(engine, "DELETE FROM audit_events WHERE seq >= 4")
    assert_broken_at(engine, 4)


def test_swapped_events_are_named(engine: Engine) -> None:
    append_all(engine, 5)
    tamper(
        engine,
        "UPDATE audit_events SET seq = -3 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = -3",
    )
    assert_broken_at(engine, 3)


def test_a_rehashed_forgery_still_breaks_the_next_link(engine: Engine) -> None:
    append_all(engine, 4)
    # Whatever hash a forger stores for seq 2, seq 3 still names the old one.
    tamper(engine, f"UPDATE audit_events SET hash = '{'f' * 64}' WHERE seq = 2")
    assert_broken_at(engine, 2)


def test_list_filters_newest_first(engine: Engine) -> None:
    with write_session(engine) as session:
        audit.append(session, event(1, actor="alice"))
        audit.append(session, event(2, actor="bob", action="alias.set"))
        audit.append(session, event(3, actor="alice", action="alias.set"))
    with read_session(engine) as session:
        assert [r.seq for r in audit.list_events(session)] == [3, 2, 1]
        assert [r.seq for r in audit.list_events(session, actor="alice")] == [3, 1]
        assert [r.seq for r in audit.list_events(session, action="alias.set")] == [3, 2]
        assert [r.seq for r in audit.list_events(session, subject="fraud:2")] == [2]
        assert [r.seq for r in audit.list_events(session, limit=1)] == [3]
        assert audit.list_events(session, actor="alice", action="model.push")[0].seq == 1


def test_concurrent_appends_stay_one_line(engine: Engine) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def writer(worker: int) -> None:
        try:
            start.wait(timeout=10)
            for n in range(10):
                with write_session(engine) as session:
                    audit.append(session, event(n + 1, actor=f"w{worker}"))
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with read_session(engine) as session:
        audit.verify(session)
        assert sorted(r.seq for r in audit.list_events(session, limit=100)) == list(range(1, 41))
