"""API tokens over the state store: issued once, kept only as a hash, verified by id.

A token reads ``mp_<id>_<secret>``: the id (16 hex digits) finds the row, and the secret
(256 random bits from :mod:`secrets`) is compared by its SHA-256 with
:func:`hmac.compare_digest`. A fast hash is enough here: the secret is random, not a
password, so there is nothing for a slow hash to protect against guessing. The secret is
shown once, at creation; the store never holds it.

Creating and revoking a token are audited in the same transaction as the change.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from modelplane.errors import InvalidSpec, NotFound, Unauthorized
from modelplane.security.scopes import Principal, Scope, parse_scopes
from modelplane.spec.names import check_name
from modelplane.store import audit
from modelplane.store.db import read_session, write_session
from modelplane.store.schema import ApiTokenRow
from modelplane.types import Clock, SystemClock

__all__ = [
    "IssuedToken",
    "TokenRecord",
    "TokenStore",
    "hash_secret",
    "parse_duration",
    "read_token_file",
    "split_token",
    "write_token_file",
]

PREFIX = "mp"
_TOKEN = re.compile(r"^mp_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What is stored about a token (never its secret)."""

    id: str
    subject: str
    team: str
    scopes: frozenset[Scope]
    endpoints: frozenset[str] | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subject": self.subject,
            "team": self.team,
            "scopes": sorted(self.scopes),
            "endpoints": None if self.endpoints is None else sorted(self.endpoints),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: ``token`` is the only copy of the secret; show it once."""

    record: TokenRecord
    token: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str]:
    """``(id, secret)`` of a well-formed token, or :class:`Unauthorized`."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise Unauthorized("the token is malformed (expected mp_<id>_<secret>)")
    return match.group(1), match.group(2)


def parse_duration(text: str, *, field: str = "expires_in") -> float:
    """``30d``, ``12h``, ``15m``, ``90s``, ``2w`` as seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise InvalidSpec(
            f"{field}: '{text}' is not a duration like 30d, 12h, 15m",
            details=[{"field": field, "problem": "expected <positive number><s|m|h|d|w>"}],
        )
    return float(int(match.group(1)) * _UNIT_S[match.group(2)])


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back without a zone; every stored one is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _record(row: ApiTokenRow) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        subject=row.subject,
        team=row.team,
        scopes=frozenset(Scope(s) for s in row.scopes),
        endpoints=None if row.endpoints is None else frozenset(row.endpoints),
        created_at=_aware(row.created_at) or row.created_at,
        created_by=row.created_by,
        expires_at=_aware(row.expires_at),
        revoked_at=_aware(row.revoked_at),
    )


def _check_subject(subject: str) -> str:
    if not subject or not subject.strip() or len(subject) > 200:
        raise InvalidSpec(
            "subject must be a non-empty name of at most 200 characters",
            details=[{"field": "subject", "problem": "empty or too long"}],
        )
    return subject


class TokenStore:
    """Issue, list, revoke and verify tokens in the state store."""

    def __init__(self, engine: Engine, *, clock: Clock | None = None) -> None:
        self.engine = engine
        self._clock = clock or SystemClock()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.wall(), UTC)

    def create(
        self,
        *,
        subject: str,
        team: str,
        scopes: list[str] | frozenset[Scope],
        actor: str,
        endpoints: list[str] | None = None,
        expires_in_s: float | None = None,
        reason: str = "",
    ) -> IssuedToken:
        """A new token; its secret is in the returned value and nowhere else."""
        _check_subject(subject)
        try:
            check_name(team)
        except ValueError as exc:
            raise InvalidSpec(
                f"team: {exc}", details=[{"field": "team", "problem": str(exc)}]
            ) from None
        parsed = parse_scopes(scopes)
        if endpoints is not None:
            for index, name in enumerate(endpoints):
                try:
                    check_name(name)
                except ValueError as exc:
                    raise InvalidSpec(
                        f"endpoints[{index}]: {exc}",
                        details=[{"field": f"endpoints[{index}]", "problem": str(exc)}],
                    ) from None
        if expires_in_s is not None and expires_in_s <= 0:
            raise InvalidSpec("expires_in must be positive", details=[{"field": "expires_in"}])
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = self._now()
        expires = None
        if expires_in_s is not None:
            expires = datetime.fromtimestamp(self._clock.wall() + expires_in_s, UTC)
        row = ApiTokenRow(
            id=token_id,
            subject=subject,
            team=team,
            scopes=sorted(parsed),
            endpoints=None if endpoints is None else sorted(set(endpoints)),
            secret_hash=hash_secret(secret),
            created_at=now,
            created_by=actor,
            expires_at=expires,
            revoked_at=None,
        )
        with write_session(self.engine) as session:
            session.add(row)
            session.flush()
            record = _record(row)
            event = audit.AuditEvent(
                actor, "token.create", f"token/{token_id}", now, reason, None, record.to_dict()
            )
            audit.append(session, event)
        return IssuedToken(record, f"{PREFIX}_{token_id}_{secret}")

    def revoke(self, token_id: str, *, actor: str, reason: str = "") -> TokenRecord:
        """Revoke a token (for good); revoking it again changes nothing."""
        with write_session(self.engine) as session:
            row = session.get(ApiTokenRow, token_id, with_for_update=True)
            if row is None:
                raise NotFound(f"token '{token_id}' not found")
            if row.revoked_at is None:
                now = self._now()
                row.revoked_at = now
                event = audit.AuditEvent(
                    actor, "token.revoke", f"token/{token_id}", now, reason,
                    {"revoked_at": None}, {"revoked_at": now.isoformat()},
                )  # fmt: skip
                audit.append(session, event)
            session.flush()
            return _record(row)

    def list(self, *, include_revoked: bool = False, team: str | None = None) -> list[TokenRecord]:
        query = select(ApiTokenRow).order_by(ApiTokenRow.created_at, ApiTokenRow.id)
        if not include_revoked:
            query = query.where(ApiTokenRow.revoked_at.is_(None))
        if team is not None:
            query = query.where(ApiTokenRow.team == team)
        with read_session(self.engine) as session:
            return [_record(row) for row in session.scalars(query)]

    def verify(self, token: str) -> Principal:
        """The principal of a valid token, or :class:`Unauthorized` saying why not."""
        token_id, secret = split_token(token)
        with read_session(self.engine) as session:
            row = session.get(ApiTokenRow, token_id)
            # Hash even when the id is unknown, so both failures take the same time.
            given = hash_secret(secret)
            if row is None or not hmac.compare_digest(given, row.secret_hash):
                raise Unauthorized("the token is not valid")
            record = _record(row)
        if record.revoked_at is not None:
            raise Unauthorized(f"token {token_id} was revoked")
        expires_at = None if record.expires_at is None else record.expires_at.timestamp()
        if expires_at is not None and expires_at <= self._clock.wall():
            raise Unauthorized(f"token {token_id} expired")
        return Principal(
            record.subject,
            record.team,
            record.scopes,
            record.endpoints,
            token_id=token_id,
            expires_at=expires_at,
        )


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` readable by its owner only (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, f"{token}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_token_file(path: Path) -> str | None:
    """The token kept at ``path``, or ``None`` when there is none."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None
