"""Declarative resources (endpoints, policies, ...): desired spec, generation, observed status.

``apply`` is idempotent: applying the same spec again changes nothing and records nothing;
a different spec bumps the generation and appends one audit event (before and after) in the
same transaction. Controllers read specs, act, and write status with the generation they
observed, so a reader can tell a stale status from a current one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from modelplane.errors import Conflict, NotFound
from modelplane.store import audit
from modelplane.store.db import read_session, write_session
from modelplane.store.schema import ResourceRow
from modelplane.types import Clock, SystemClock

__all__ = ["Applied", "Resource", "ResourceStore", "put_status_row"]


@dataclass(frozen=True, slots=True)
class Resource:
    kind: str
    name: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any] | None
    updated_at: datetime

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class Applied:
    """What ``apply`` did: ``created``, ``configured`` (changed) or ``unchanged``."""

    resource: Resource
    outcome: str
    before: dict[str, Any] | None


def _resource(row: ResourceRow) -> Resource:
    return Resource(
        kind=row.kind,
        name=row.name,
        generation=row.generation,
        spec=dict(row.spec),
        status=None if row.status is None else dict(row.status),
        updated_at=row.updated_at,
    )


class ResourceStore:
    """Desired state of declarative resources, over the state store."""

    def __init__(self, engine: Engine, *, clock: Clock | None = None) -> None:
        self.engine = engine
        self._clock = clock or SystemClock()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.wall(), UTC)

    def apply(
        self,
        kind: str,
        name: str,
        spec: dict[str, Any],
        *,
        actor: str,
        reason: str = "",
        expected_generation: int | None = None,
    ) -> Applied:
        """Create or update; with ``expected_generation``, only if nobody changed it since."""
        with write_session(self.engine) as session:
            row = session.get(ResourceRow, (kind, name), with_for_update=True)
            current = None if row is None else row.generation
            if expected_generation is not None and current != expected_generation:
                raise Conflict(
                    f"{kind}/{name} is at generation {current}, not {expected_generation}; "
                    "reread and apply again"
                )
            if row is not None and row.spec == spec:
                return Applied(_resource(row), "unchanged", dict(row.spec))
            before = None if row is None else dict(row.spec)
            now = self._now()
            if row is None:
                row = ResourceRow(
                    kind=kind, name=name, generation=1, spec=spec, status=None, updated_at=now
                )
                session.add(row)
            else:
                row.generation += 1
                row.spec = spec
                row.updated_at = now
            audit.append(
                session,
                audit.AuditEvent(
                    actor=actor,
                    action=f"{kind.lower()}.apply",
                    subject=f"{kind}/{name}",
                    at=now,
                    reason=reason,
                    before=before,
                    after=spec,
                ),
            )
            session.flush()
            return Applied(_resource(row), "created" if before is None else "configured", before)

    def delete(self, kind: str, name: str, *, actor: str, reason: str = "") -> None:
        with write_session(self.engine) as session:
            row = session.get(ResourceRow, (kind, name), with_for_update=True)
            if row is None:
                raise NotFound(f"{kind}/{name} not found")
            now = self._now()
            audit.append(
                session,
                audit.AuditEvent(
                    actor=actor,
                    action=f"{kind.lower()}.delete",
                    subject=f"{kind}/{name}",
                    at=now,
                    reason=reason,
                    before=dict(row.spec),
                    after=None,
                ),
            )
            session.delete(row)

    def get(self, kind: str, name: str) -> Resource:
        with read_session(self.engine) as session:
            row = session.get(ResourceRow, (kind, name))
            if row is None:
                raise NotFound(f"{kind}/{name} not found")
            return _resource(row)

    def list(self, kind: str) -> list[Resource]:
        query = select(ResourceRow).where(ResourceRow.kind == kind).order_by(ResourceRow.name)
        with read_session(self.engine) as session:
            return [_resource(row) for row in session.scalars(query)]

    def set_status(self, kind: str, name: str, status: dict[str, Any]) -> bool:
        """Write observed status (not audited: it is observation, not change); False if gone.

        Written only when it differs, so a controller that reconciles often stays cheap.
        """
        with write_session(self.engine) as session:
            row = session.get(ResourceRow, (kind, name), with_for_update=True)
            if row is None:
                return False
            if row.status != status:
                row.status = status
            return True


def put_status_row(
    session: Session,
    row: ResourceRow | None,
    *,
    kind: str,
    name: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    at: datetime,
) -> None:
    """Write ``status`` into ``row``, or add the row (generation 1, ``spec``) where there is none.

    For resources a controller owns and reports on (an endpoint's SLO or outcome report): no
    one applies them, so the first report creates them. The caller loads ``row`` in ``session``
    (several at once, and may read its old status first).
    """
    if row is None:
        session.add(
            ResourceRow(kind=kind, name=name, generation=1, spec=spec, status=status, updated_at=at)
        )
    else:
        row.status = status
        row.updated_at = at
