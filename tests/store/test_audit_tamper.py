"""Tampering by someone who can write the database but does not hold the audit key.

The forger here knows the hashing rule (it is in the module's documentation) and recomputes
every hash after the event it changed, and moves the head: the plain hash chain is then
whole again. The MACs and the anchors are what give each forgery away, naming the seq.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from modelplane.errors import IntegrityError, InvalidSpec
from modelplane.store import audit
from modelplane.store.audit_anchors import Anchor, append_anchor, read_anchors
from modelplane.store.db import open_engine, read_session, write_session

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
KEY = audit.AuditKey(b"k" * 32)
GENESIS = "0" * 64


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    audit.bind_key(engine, KEY)
    yield engine
    engine.dispose()


def append_all(engine: Engine, first: int, last: int) -> None:
    for n in range(first, last + 1):
        with write_session(engine) as session:
            audit.append(
                session,
                audit.AuditEvent("alice", "model.push", f"fraud:{n}", T0 + timedelta(seconds=n)),
            )


def anchor(engine: Engine, path: Path) -> Anchor:
    with read_session(engine) as session:
        made = audit.anchor_head(session, at=T0 + timedelta(hours=1))
    append_anchor(path, made)
    return made


def verify(engine: Engine, anchors: Path | None = None) -> audit.AuditReport:
    with read_session(engine) as session:
        return audit.verify(session, anchors=read_anchors(anchors) if anchors else ())


def broken_at(engine: Engine, seq: int, anchors: Path | None = None) -> str:
    with pytest.raises(IntegrityError) as info:
        verify(engine, anchors)
    assert f"seq {seq}:" in str(info.value)
    assert info.value.details[0]["seq"] == seq
    return str(info.value)


def sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def forged_hash(prev_hash: str, record: audit.AuditRecord, seq: int) -> str:
    body = {
        "seq": seq,
        "at": record.at.astimezone(UTC).isoformat(),
        "actor": record.actor,
        "action": record.action,
        "subject": record.subject,
        "reason": record.reason,
        "before": record.before,
        "after": record.after,
    }
    return hashlib.sha256((prev_hash + audit.canonical_json(body)).encode()).hexdigest()


def rehash(engine: Engine, *, strip_macs_from: int | None = None) -> None:
    """Recompute every hash and the head, as a forger without the key would."""
    with read_session(engine) as session:
        records = sorted(audit.list_events(session, limit=10_000), key=lambda r: r.seq)
    prev = GENESIS
    for record in records:
        digest = forged_hash(prev, record, record.seq)
        strip = strip_macs_from is not None and record.seq >= strip_macs_from
        sql(
            engine,
            "UPDATE audit_events SET prev_hash = :prev, hash = :hash"
            + (", mac = NULL" if strip else "")
            + " WHERE seq = :seq",
            prev=prev,
            hash=digest,
            seq=record.seq,
        )
        prev = digest
    last = records[-1].seq if records else 0
    sql(engine, "UPDATE audit_head SET seq = :seq, hash = :hash", seq=last, hash=prev)


def test_an_intact_keyed_chain_verifies_against_its_anchors(engine: Engine, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    append_all(engine, 1, 3)
    anchor(engine, anchors)
    append_all(engine, 4, 5)
    anchor(engine, anchors)
    report = verify(engine, anchors)
    assert (report.events, report.unkeyed, report.anchors) == (5, 0, 2)
    assert report.key_id == KEY.key_id
    assert [a.seq for a in read_anchors(anchors)] == [3, 5]


def test_an_edited_and_rehashed_event_is_named(engine: Engine) -> None:
    append_all(engine, 1, 5)
    sql(engine, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")
    rehash(engine)
    assert "MAC does not match" in broken_at(engine, 3)


def test_a_deleted_and_renumbered_event_is_named(engine: Engine, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    append_all(engine, 1, 5)
    anchor(engine, anchors)
    sql(engine, "DELETE FROM audit_events WHERE seq = 2")
    for seq in (3, 4, 5):
        sql(engine, "UPDATE audit_events SET seq = :new WHERE seq = :old", new=seq - 1, old=seq)
    rehash(engine)
    broken_at(engine, 2)
    broken_at(engine, 2, anchors)


def test_a_deleted_event_is_named_without_renumbering(engine: Engine, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    append_all(engine, 1, 5)
    anchor(engine, anchors)
    sql(engine, "DELETE FROM audit_events WHERE seq = 2")
    broken_at(engine, 2, anchors)


def test_a_chain_rewritten_without_macs_is_caught_by_its_anchor(
    engine: Engine, tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors.jsonl"
    append_all(engine, 1, 5)
    anchor(engine, anchors)
    sql(engine, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    rehash(engine, strip_macs_from=1)
    # Alone, the stripped chain only looks old (every event unkeyed) ...
    assert verify(engine).unkeyed == 5
    # ... the anchor knows the head it had.
    assert "rewritten" in broken_at(engine, 5, anchors)


def test_macs_stripped_after_a_keyed_event_are_named(engine: Engine) -> None:
    append_all(engine, 1, 5)
    sql(engine, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 4")
    rehash(engine, strip_macs_from=4)
    assert "no MAC after keyed events" in broken_at(engine, 4)


def test_a_chain_rekeyed_by_the_forger_is_named(engine: Engine) -> None:
    append_all(engine, 1, 3)
    sql(engine, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    rehash(engine)
    forger = audit.AuditKey(b"f" * 32)
    with read_session(engine) as session:
        records = audit.list_events(session)
    for record in records:
        mac = forger.mac(record.hash)
        sql(engine, "UPDATE audit_events SET mac = :mac WHERE seq = :seq", mac=mac, seq=record.seq)
    broken_at(engine, 1)


def test_a_dropped_tail_is_named_by_the_anchor(engine: Engine, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    append_all(engine, 1, 5)
    anchor(engine, anchors)
    sql(engine, "DELETE FROM audit_events WHERE seq >= 4")
    rehash(engine)  # the head moves back to seq 3: the chain alone looks whole
    assert verify(engine).events == 3
    assert "dropped tail" in broken_at(engine, 4, anchors)


def test_a_forged_or_foreign_anchor_is_refused(engine: Engine, tmp_path: Path) -> None:
    append_all(engine, 1, 3)
    good = anchor(engine, tmp_path / "anchors.jsonl")
    line = json.loads(good.to_line())
    forged = tmp_path / "forged.jsonl"
    forged.write_text(json.dumps({**line, "seq": 2}) + "\n")
    with pytest.raises(IntegrityError, match=r"anchor 1 .*invalid signature"):
        verify(engine, forged)
    foreign = tmp_path / "foreign.jsonl"
    other = audit.AuditKey(b"o" * 32)
    unsigned = Anchor(good.seq, good.hash, good.at, other.key_id)
    append_anchor(
        foreign,
        Anchor(good.seq, good.hash, good.at, other.key_id, other.sign_anchor(unsigned.body())),
    )
    with pytest.raises(IntegrityError, match="signed by key"):
        verify(engine, foreign)
    garbled = tmp_path / "garbled.jsonl"
    garbled.write_text("{not json\n")
    with pytest.raises(IntegrityError, match=r"garbled\.jsonl:1"):
        read_anchors(garbled)


def test_events_before_the_key_are_unkeyed_not_tampered(database_url: str) -> None:
    engine = open_engine(database_url)
    try:
        append_all(engine, 1, 2)
        audit.bind_key(engine, KEY)
        append_all(engine, 3, 4)
        report = verify(engine)
        assert (report.events, report.unkeyed) == (4, 2)
    finally:
        engine.dispose()


def test_keyed_events_cannot_be_checked_without_the_key(engine: Engine, database_url: str) -> None:
    append_all(engine, 1, 2)
    keyless = open_engine(database_url)
    try:
        with pytest.raises(InvalidSpec, match="needs the audit key"), read_session(keyless) as s:
            audit.verify(s)
    finally:
        keyless.dispose()


def test_anchors_append_to_an_fsspec_url(engine: Engine) -> None:
    # The memory filesystem is one per process: a fresh name keeps the runs apart.
    url = f"memory://audit-anchors/{uuid.uuid4().hex}.jsonl"
    append_all(engine, 1, 2)
    with read_session(engine) as session:
        first = audit.anchor_head(session, at=T0)
    append_anchor(url, first)
    append_all(engine, 3, 3)
    with read_session(engine) as session:
        second = audit.anchor_head(session, at=T0, anchors=read_anchors(url))
    append_anchor(url, second)
    assert [a.seq for a in read_anchors(url)] == [2, 3]


def test_an_anchor_url_whose_filesystem_is_not_installed_is_named() -> None:
    """s3:// without s3fs: an error naming the anchor, never a traceback."""
    with pytest.raises(InvalidSpec, match=r"anchor 'nosuchproto://a/b\.jsonl'") as caught:
        read_anchors("nosuchproto://a/b.jsonl")
    assert caught.value.details[0]["field"] == "anchor"
