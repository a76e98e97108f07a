"""The audit log: append-only, hash-chained records of every change.

Each event's hash is ``sha256(prev_hash + canonical JSON of its fields, seq included)``, so
editing, deleting or reordering a stored event breaks the chain at that event, and
:func:`verify` names it. The one-row ``audit_head`` table holds the last seq and hash:
every append locks it (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite the write lock
that :func:`modelplane.store.db.write_session` takes with ``BEGIN IMMEDIATE``), which keeps
the chain one line under concurrency, and it is how a deleted tail is noticed. ``seq`` is
also the primary key, so two appenders that somehow raced could never both commit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.orm import Session

from modelplane.errors import IntegrityError, InvalidSpec
from modelplane.store.schema import GENESIS_HASH, AuditEventRow, AuditHeadRow

__all__ = [
    "AuditEvent",
    "AuditRecord",
    "append",
    "canonical_json",
    "list_events",
    "verify",
]

_HEAD_ID = 1
# actor, action, subject, reason, before, after: what an event says, apart from its place.
_Content = tuple[str, str, str, str, Any, Any]


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """A change to record: who did what to which subject, why, and the state around it."""

    actor: str
    action: str
    subject: str
    at: datetime
    reason: str = ""
    before: Any = None
    after: Any = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A stored event, with its place in the chain."""

    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    reason: str
    before: Any
    after: Any
    prev_hash: str
    hash: str


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, no NaN."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidSpec(f"audit data must be plain JSON: {exc}") from exc


def _chain_hash(prev_hash: str, seq: int, at: datetime, content: _Content) -> str:
    actor, action, subject, reason, before, after = content
    body = {
        "seq": seq,
        "at": at.astimezone(UTC).isoformat(),
        "actor": actor,
        "action": action,
        "subject": subject,
        "reason": reason,
        "before": before,
        "after": after,
    }
    return hashlib.sha256((prev_hash + canonical_json(body)).encode()).hexdigest()


def _row_hash(row: Row[Any]) -> str:
    content = (row.actor, row.action, row.subject, row.reason, row.before, row.after)
    return _chain_hash(row.prev_hash, row.seq, row.at, content)


def append(session: Session, event: AuditEvent) -> AuditRecord:
    """Append ``event`` inside the caller's (write) transaction; it commits with it."""
    if event.at.tzinfo is None:
        raise InvalidSpec("audit event time must be time-zone aware")
    # What is hashed must be what reads back: JSON-normalize (tuples become lists, …).
    before = json.loads(canonical_json(event.before))
    after = json.loads(canonical_json(event.after))
    at = event.at.astimezone(UTC)
    head = session.execute(
        select(AuditHeadRow.seq, AuditHeadRow.hash)
        .where(AuditHeadRow.id == _HEAD_ID)
        .with_for_update()
    ).one()
    seq = head.seq + 1
    content = (event.actor, event.action, event.subject, event.reason, before, after)
    digest = _chain_hash(head.hash, seq, at, content)
    record = AuditRecord(
        seq=seq,
        at=at,
        actor=event.actor,
        action=event.action,
        subject=event.subject,
        reason=event.reason,
        before=before,
        after=after,
        prev_hash=head.hash,
        hash=digest,
    )
    session.execute(insert(AuditEventRow).values(**_as_columns(record)))
    session.execute(
        update(AuditHeadRow).where(AuditHeadRow.id == _HEAD_ID).values(seq=seq, hash=digest)
    )
    return record


_COLUMNS = tuple(f.name for f in fields(AuditRecord))


def _as_columns(record: AuditRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _COLUMNS}


def _record(row: AuditEventRow) -> AuditRecord:
    return AuditRecord(**{name: getattr(row, name) for name in _COLUMNS})


def _broken(seq: int, problem: str) -> IntegrityError:
    return IntegrityError(
        f"audit chain broken at seq {seq}: {problem}",
        details=[{"field": f"seq {seq}", "seq": seq, "problem": problem}],
    )


def verify(session: Session) -> None:
    """Walk the whole chain; raise :class:`IntegrityError` naming the first bad seq.

    The head is read first and the walk stops at its seq: events appended meanwhile by
    other transactions (visible under READ COMMITTED) are not mistaken for tampering.
    """
    head = session.execute(select(AuditHeadRow).where(AuditHeadRow.id == _HEAD_ID)).scalar_one()
    expected_seq, prev_hash = 1, GENESIS_HASH
    for row in _events_up_to(session, head.seq):
        if row.seq != expected_seq:
            raise _broken(expected_seq, f"event missing (the next stored event is {row.seq})")
        if row.prev_hash != prev_hash:
            raise _broken(row.seq, "prev_hash does not match the previous event: reordered")
        if _row_hash(row) != row.hash:
            raise _broken(row.seq, "contents changed since it was written (hash mismatch)")
        expected_seq, prev_hash = expected_seq + 1, row.hash
    if head.seq > expected_seq - 1:
        raise _broken(expected_seq, f"events {expected_seq}..{head.seq} are missing")
    if head.hash != prev_hash:
        raise _broken(head.seq, "the chain head does not match the last stored event")


def _events_up_to(session: Session, last: int, page: int = 1000) -> Iterator[Row[Any]]:
    # Plain rows, not ORM objects, so a long chain does not pile up in the caller's session;
    # keyset pages, not a streaming cursor, so nothing is left open when verify stops early.
    after = 0
    while True:
        query = select(*AuditEventRow.__table__.columns).order_by(AuditEventRow.seq).limit(page)
        query = query.where(AuditEventRow.seq > after, AuditEventRow.seq <= last)
        rows = session.execute(query).all()
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].seq


def list_events(
    session: Session,
    *,
    subject: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    limit: int = 100,
) -> list[AuditRecord]:
    """The newest ``limit`` events matching every filter given, newest first."""
    query = select(AuditEventRow).order_by(AuditEventRow.seq.desc()).limit(limit)
    if subject is not None:
        query = query.where(AuditEventRow.subject == subject)
    if action is not None:
        query = query.where(AuditEventRow.action == action)
    if actor is not None:
        query = query.where(AuditEventRow.actor == actor)
    return [_record(row) for row in session.execute(query).scalars()]
