"""The audit log: append-only, hash-chained records of every change.

Each event's hash is ``sha256(prev_hash + canonical JSON of its fields, seq included)``, so
editing, deleting or reordering a stored event breaks the chain at that event, and
:func:`verify` names it. The one-row ``audit_head`` table holds the last seq and hash:
every append locks it (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite the write lock
that :func:`modelplane.store.db.write_session` takes with ``BEGIN IMMEDIATE``), which keeps
the chain one line under concurrency, and it is how a deleted tail is noticed. ``seq`` is
also the primary key, so two appenders that somehow raced could never both commit.

A hash chain alone proves nothing to someone who can write the database: they can edit an
event and recompute every hash after it. So each event also carries ``mac``, an HMAC of its
hash under an :class:`AuditKey` kept outside the database (bound to the engine with
:func:`bind_key`); without the key a forger cannot make a changed event's MAC match. Events
written before a key existed have no MAC and are counted as *unkeyed*; an unkeyed event after
a keyed one can only be a forgery. What the MACs cannot show is a chain rewritten whole
without MACs, or a tail cut off together with the head: for those, :func:`verify` checks
signed :class:`~modelplane.store.audit_anchors.Anchor` records of past heads, kept elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Row, insert, select, update
from sqlalchemy.orm import Session

from modelplane.errors import IntegrityError, InvalidSpec
from modelplane.store.audit_anchors import Anchor
from modelplane.store.schema import GENESIS_HASH, AuditEventRow, AuditHeadRow

__all__ = [
    "AuditEvent",
    "AuditKey",
    "AuditRecord",
    "AuditReport",
    "anchor_head",
    "append",
    "bind_key",
    "bound_key",
    "canonical_json",
    "list_events",
    "verify",
]

_HEAD_ID = 1
_KEY_OPTION = "modelplane_audit_key"
MIN_KEY_BYTES = 16
# Domain separation: a MAC of an event can never pass for an anchor's signature, or back.
_EVENT_PURPOSE = b"modelplane-audit-event-v1\0"
_ANCHOR_PURPOSE = b"modelplane-audit-anchor-v1\0"
_KEY_ID_PURPOSE = b"modelplane-audit-key-id-v1\0"
# actor, action, subject, reason, before, after: what an event says, apart from its place.
_Content = tuple[str, str, str, str, Any, Any]


@dataclass(frozen=True, slots=True)
class AuditKey:
    """The secret that keys the audit log's MACs and anchors; never stored in the database."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise InvalidSpec(
                f"audit key: at least {MIN_KEY_BYTES} bytes are needed, got {len(self.secret)}",
                details=[{"field": "audit_key", "problem": "too short"}],
            )

    @property
    def key_id(self) -> str:
        """A public name for the key (16 hex digits), so anchors say which key signed them."""
        return hashlib.sha256(_KEY_ID_PURPOSE + self.secret).hexdigest()[:16]

    def mac(self, event_hash: str) -> str:
        """The MAC stored with the event whose chain hash is ``event_hash``."""
        return self._hmac(_EVENT_PURPOSE, event_hash.encode())

    def sign_anchor(self, body: bytes) -> str:
        """The signature of an anchor's canonical body."""
        return self._hmac(_ANCHOR_PURPOSE, body)

    def _hmac(self, purpose: bytes, message: bytes) -> str:
        return hmac.new(self.secret, purpose + message, hashlib.sha256).hexdigest()


def bind_key(engine: Engine, key: AuditKey) -> None:
    """Key every event appended, and check every event verified, through ``engine``."""
    # An execution option travels with every session and connection made from the engine,
    # so the writers that only get an engine (resource store, controllers) key their events
    # without each being handed the key.
    engine.update_execution_options(**{_KEY_OPTION: key})


def bound_key(session: Session) -> AuditKey | None:
    """The key :func:`bind_key` bound to the session's engine, if any."""
    key = session.get_bind().get_execution_options().get(_KEY_OPTION)
    return key if isinstance(key, AuditKey) else None


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What :func:`verify` found intact."""

    events: int
    """Events in the chain, up to its head."""
    head_hash: str
    """The hash of the last event (the genesis hash for an empty chain)."""
    unkeyed: int
    """Events without a MAC: written before the audit key existed (always a prefix)."""
    anchors: int
    """Anchors the chain was checked against."""
    key_id: str | None
    """The key the MACs were checked with."""


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
    mac: str | None = None
    """HMAC of ``hash`` under the audit key; ``None`` when written without a key."""


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
        mac=None if (key := bound_key(session)) is None else key.mac(digest),
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


def verify(
    session: Session, *, key: AuditKey | None = None, anchors: Sequence[Anchor] = ()
) -> AuditReport:
    """Walk the whole chain and check it against ``anchors``; raise :class:`IntegrityError`
    naming the first bad seq.

    ``key`` defaults to the one bound to the session's engine; it is needed as soon as the
    chain holds a keyed event or anchors are given. The head is read first and the walk stops
    at its seq: events appended meanwhile by other transactions (visible under READ
    COMMITTED) are not mistaken for tampering.
    """
    key = key if key is not None else bound_key(session)
    head = session.execute(select(AuditHeadRow).where(AuditHeadRow.id == _HEAD_ID)).scalar_one()
    wanted = {anchor.seq for anchor in anchors}
    hashes = {0: GENESIS_HASH}
    expected_seq, prev_hash, unkeyed = 1, GENESIS_HASH, 0
    for row in _events_up_to(session, head.seq):
        _check_link(row, expected_seq, prev_hash)
        if row.mac is None:
            if unkeyed != expected_seq - 1:
                raise _broken(row.seq, "no MAC after keyed events: written without the audit key")
            unkeyed += 1
        else:
            _check_mac(row, key)
        if row.seq in wanted:
            hashes[row.seq] = row.hash
        expected_seq, prev_hash = expected_seq + 1, row.hash
    last = expected_seq - 1
    if head.seq > last:
        raise _broken(expected_seq, f"events {expected_seq}..{head.seq} are missing")
    if head.hash != prev_hash:
        raise _broken(head.seq, "the chain head does not match the last stored event")
    if anchors:
        _check_anchors(anchors, _need(key, "anchors"), last, hashes)
    key_id = None if key is None else key.key_id
    return AuditReport(last, prev_hash, unkeyed, len(anchors), key_id)


def _check_link(row: Row[Any], expected_seq: int, prev_hash: str) -> None:
    if row.seq != expected_seq:
        raise _broken(expected_seq, f"event missing (the next stored event is {row.seq})")
    if row.prev_hash != prev_hash:
        raise _broken(row.seq, "prev_hash does not match the previous event: reordered")
    if _row_hash(row) != row.hash:
        raise _broken(row.seq, "contents changed since it was written (hash mismatch)")


def _check_mac(row: Row[Any], key: AuditKey | None) -> None:
    expected = _need(key, f"the MAC of seq {row.seq}").mac(row.hash)
    if not hmac.compare_digest(expected, row.mac):
        raise _broken(
            row.seq,
            "MAC does not match: changed and re-hashed without the audit key"
            " (or the key is not the one that wrote it)",
        )


def _need(key: AuditKey | None, what: str) -> AuditKey:
    if key is None:
        raise InvalidSpec(
            f"checking {what} needs the audit key, and none was given",
            details=[{"field": "audit_key", "problem": "missing"}],
        )
    return key


def _check_anchors(
    anchors: Sequence[Anchor], key: AuditKey, last: int, hashes: dict[int, str]
) -> None:
    # Earliest first, so the message names the earliest seq that no longer holds.
    for number, anchor in sorted(enumerate(anchors, start=1), key=lambda a: a[1].seq):
        where = f"anchor {number} (seq {anchor.seq}, {anchor.at.astimezone(UTC):%Y-%m-%d %H:%M:%S})"
        if anchor.key_id != key.key_id:
            raise _bad_anchor(number, f"{where} is signed by key {anchor.key_id}, not {key.key_id}")
        if not hmac.compare_digest(key.sign_anchor(anchor.body()), anchor.signature):
            raise _bad_anchor(number, f"{where} has an invalid signature: forged or edited")
        if anchor.seq > last:
            missing = f"{last + 1}..{anchor.seq}" if anchor.seq > last + 1 else str(last + 1)
            raise _broken(
                last + 1,
                f"events {missing} are missing: the chain ends at seq {last},"
                f" but {where} saw it reach seq {anchor.seq} (a dropped tail)",
            )
        if hashes[anchor.seq] != anchor.hash:
            raise _broken(anchor.seq, f"differs from {where}: the chain was rewritten")


def _bad_anchor(number: int, problem: str) -> IntegrityError:
    return IntegrityError(
        f"audit anchor {number} cannot be trusted: {problem}",
        details=[{"field": f"anchor {number}", "problem": problem}],
    )


def anchor_head(session: Session, *, at: datetime, anchors: Sequence[Anchor] = ()) -> Anchor:
    """Verify the chain (against ``anchors`` too), then sign its head as a new anchor.

    Verifying first means an anchor never vouches for a chain that was already tampered with.
    """
    key = _need(bound_key(session), "an anchor")
    report = verify(session, key=key, anchors=anchors)
    unsigned = Anchor(report.events, report.head_hash, at.astimezone(UTC), key.key_id)
    return replace(unsigned, signature=key.sign_anchor(unsigned.body()))


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
