"""The model registry: immutable versions, moving aliases and lineage, over the state store.

Every mutation runs in one write transaction that also appends its audit event, so a
change and its evidence commit together or not at all. Version numbers are allocated
under a lock on the model's row (PostgreSQL ``FOR UPDATE``; SQLite's write lock), backed
by a unique ``(name, version)`` key: a writer that loses a race retries from the start.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.orm import Session

from modelplane.errors import Conflict, Forbidden, IntegrityError, InvalidSpec, NotFound
from modelplane.registry.digest import digest_of_manifest, read_manifest, verify_package
from modelplane.registry.records import (
    AliasChange,
    ModelInfo,
    ModelVersion,
    add_lineage,
    alias_change,
    lock_model,
    model_info,
    version_row,
    versions_of,
)
from modelplane.registry.refs import Ref, check_alias, check_model_name, parse_ref
from modelplane.registry.signatures import VersionSignature, add_signature, signatures_of
from modelplane.spec.manifest import Manifest
from modelplane.spec.names import check_name
from modelplane.store import audit
from modelplane.store.artifacts import open_artifact_store
from modelplane.store.audit_anchors import Anchor
from modelplane.store.base import ArtifactStore
from modelplane.store.db import lost_race, open_engine, read_session, write_session
from modelplane.store.schema import (
    AliasHistoryRow,
    AliasRow,
    DatasetLineageRow,
    FeatureLineageRow,
    ModelRow,
    ModelVersionRow,
)
from modelplane.types import Clock, Digest, SystemClock

__all__ = [
    "NO_ALIAS",
    "AliasChange",
    "ModelInfo",
    "ModelVersion",
    "Registry",
    "open_registry",
    "verify_digest",
]

NO_ALIAS = 0
"""``expected_current=NO_ALIAS`` means: the alias must not exist yet."""

T = TypeVar("T")
_ATTEMPTS = 6


def verify_digest(directory: Path, expected: Digest | None = None) -> Digest:
    """A :class:`~modelplane.store.base.PackageVerifier` for artifact stores."""
    return verify_package(directory, expected).digest


def open_registry(
    database_url: str,
    artifact_url: str,
    *,
    actor: str,
    clock: Clock | None = None,
    audit_key: audit.AuditKey | None = None,
) -> Registry:
    """A registry over the state store at ``database_url`` (migrated) and the artifacts at
    ``artifact_url`` (a folder, or any fsspec URL); :meth:`Registry.close` when done.
    ``audit_key`` keys the audit events written through it (see :func:`audit.bind_key`)."""
    engine = open_engine(database_url)
    if audit_key is not None:
        audit.bind_key(engine, audit_key)
    artifacts = open_artifact_store(artifact_url, verify=verify_digest)
    return Registry(engine, artifacts, actor=actor, clock=clock)


@dataclass(frozen=True, slots=True)
class _AliasMove:
    name: str
    alias: str
    to_version: int | None
    expected: int | None
    actor: str
    reason: str

    @property
    def subject(self) -> str:
        return f"{self.name}@{self.alias}"


class Registry:
    """Register packages as versions, resolve references, move aliases, answer lineage."""

    def __init__(
        self,
        engine: Engine,
        artifacts: ArtifactStore,
        *,
        actor: str,
        clock: Clock | None = None,
    ) -> None:
        self.engine = engine
        self.artifacts = artifacts
        self._actor = _check_actor(actor)
        self._clock = clock or SystemClock()
        self._jitter = random.Random()

    def close(self) -> None:
        """Close pooled database connections (the engine stays usable)."""
        self.engine.dispose()

    # -- mutations ------------------------------------------------------------------

    def push(
        self,
        package_dir: Path,
        *,
        actor: str | None = None,
        reason: str = "",
        team: str | None = None,
    ) -> ModelVersion:
        """Register a sealed package folder; pushing the same digest again returns its version.

        ``team`` is the team the pusher acts for: a new model becomes that team's, and an
        existing model takes versions only from its own team (:class:`Forbidden` otherwise;
        a model of no team, from before teams, only from ``team=None``, the administrator).
        """
        digest = self.artifacts.put_package(package_dir)
        manifest = read_manifest(package_dir)
        if digest_of_manifest(manifest) != digest:
            raise IntegrityError(f"{package_dir}: the package changed while it was being pushed")
        who = _check_actor(actor or self._actor)
        row_id = self._write(lambda s: self._register(s, manifest, digest, who, reason, team))
        with read_session(self.engine) as session:
            row = session.get_one(ModelVersionRow, row_id)
            return versions_of(session, [row])[0]

    def _register(
        self,
        session: Session,
        manifest: Manifest,
        digest: Digest,
        actor: str,
        reason: str,
        team: str | None = None,
    ) -> int:
        now = self._now()
        model = lock_model(session, manifest.name, create_at=now)
        if model.archived:
            raise Conflict(f"model '{model.name}' is archived; it takes no new versions")
        _claim(session, model, team)
        existing = session.scalars(
            select(ModelVersionRow.id).where(
                ModelVersionRow.model_name == model.name, ModelVersionRow.digest == digest
            )
        ).first()
        if existing is not None:
            return existing
        latest = session.scalar(
            select(func.max(ModelVersionRow.version)).where(
                ModelVersionRow.model_name == model.name
            )
        )
        row = ModelVersionRow(
            model_name=model.name,
            version=(latest or 0) + 1,
            digest=digest,
            manifest=manifest.model_dump(mode="json"),
            runtime=manifest.runtime.value,
            created_at=now,
            created_by=actor,
            archived=False,
        )
        session.add(row)
        session.flush()
        add_lineage(session, row.id, manifest)
        after = {"digest": digest, "runtime": row.runtime}
        subject = f"{row.model_name}:{row.version}"
        self._audit(session, actor, "model.push", subject, reason=reason, after=after)
        return row.id

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        expected_current: int | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> ModelVersion:
        """Point ``name@alias`` at ``version``.

        With ``expected_current`` (a version, or :data:`NO_ALIAS`), the move happens only
        if the alias still points there; otherwise :class:`Conflict` and nothing changes.
        """
        check_alias(alias)
        who = _check_actor(actor or self._actor)
        move = _AliasMove(name, alias, version, expected_current, who, reason)
        self._write(lambda session: self._move_alias(session, move))
        return self.get(f"{name}:{version}")

    def remove_alias(
        self,
        name: str,
        alias: str,
        *,
        expected_current: int | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> None:
        """Delete ``name@alias``; with ``expected_current``, only if it still points there."""
        check_alias(alias)
        who = _check_actor(actor or self._actor)
        move = _AliasMove(name, alias, None, expected_current, who, reason)
        self._write(lambda session: self._move_alias(session, move))

    def _move_alias(self, session: Session, move: _AliasMove) -> None:
        lock_model(session, move.name)
        if move.to_version is not None:
            target = version_row(session, Ref(move.name, version=move.to_version))
            if target.archived:
                raise Conflict(f"'{target.model_name}:{target.version}' is archived; no alias")
        row = session.get(AliasRow, (move.name, move.alias), with_for_update=True)
        current = row.version if row is not None else None
        if move.expected is not None and move.expected != (current or NO_ALIAS):
            raise Conflict(
                f"alias '{move.subject}' points at {current or 'nothing'},"
                f" not {move.expected or 'nothing'}: it moved meanwhile; reread and retry"
            )
        if current == move.to_version:
            return
        if row is None:
            session.add(AliasRow(model_name=move.name, alias=move.alias, version=move.to_version))
        elif move.to_version is None:
            session.delete(row)
        else:
            row.version = move.to_version
        session.add(
            AliasHistoryRow(
                model_name=move.name,
                alias=move.alias,
                from_version=current,
                to_version=move.to_version,
                actor=move.actor,
                at=self._now(),
                reason=move.reason,
            )
        )
        action = "alias.set" if move.to_version is not None else "alias.remove"
        self._audit(
            session,
            move.actor,
            action,
            move.subject,
            reason=move.reason,
            before={"version": current},
            after={"version": move.to_version},
        )

    def archive(self, ref: str, *, actor: str | None = None, reason: str = "") -> None:
        """Archive a version (``name:version``) or a whole model (``name``).

        An archived version stays readable by its number but is no longer ``latest`` and
        cannot take an alias; an archived model takes no new versions.
        """
        parsed = parse_ref(ref)
        if parsed.alias is not None:
            raise InvalidSpec(f"'{ref}': archive a version (name:version) or a model, not an alias")
        who = _check_actor(actor or self._actor)
        self._write(lambda s: self._archive(s, parsed, who, reason))

    def _archive(self, session: Session, ref: Ref, actor: str, reason: str) -> None:
        model = lock_model(session, ref.name)
        if ref.version is None:
            if model.archived:
                return
            model.archived = True
            self._audit(session, actor, "model.archive", ref.name, reason=reason)
            return
        row = version_row(session, ref)
        if row.archived:
            return
        aliases = session.scalars(
            select(AliasRow.alias).where(
                AliasRow.model_name == ref.name, AliasRow.version == row.version
            )
        ).all()
        if aliases:
            names = ", ".join(f"{ref.name}@{a}" for a in sorted(aliases))
            raise Conflict(f"'{ref}' is still the target of {names}; move those aliases first")
        row.archived = True
        after = {"digest": row.digest}
        self._audit(session, actor, "version.archive", str(ref), reason=reason, after=after)

    # -- reads ----------------------------------------------------------------------

    def get(self, ref: str) -> ModelVersion:
        """Resolve ``name:version``, ``name@alias`` or ``name`` (latest version not archived)."""
        parsed = parse_ref(ref)
        with read_session(self.engine) as session:
            return versions_of(session, [version_row(session, parsed)])[0]

    def load_manifest(self, ref: str) -> Manifest:
        """The version's manifest, checked against its digest."""
        found = self.get(ref)
        if digest_of_manifest(found.manifest) != found.digest:
            raise IntegrityError(
                f"'{found.ref}': the stored manifest does not match {found.digest}"
            )
        return found.manifest

    def fetch(self, ref: str, dest: Path) -> Path:
        """Copy the version's package into ``dest`` (new or empty), verified."""
        return self.artifacts.fetch(self.get(ref).digest, dest)

    def list_models(
        self, search: str | None = None, *, include_archived: bool = False
    ) -> list[ModelInfo]:
        """Models by name; ``search`` keeps names containing it."""
        query = select(ModelRow).order_by(ModelRow.name)
        if search:
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(ModelRow.name.like(f"%{escaped}%", escape="\\"))
        if not include_archived:
            query = query.where(ModelRow.archived.is_(False))
        with read_session(self.engine) as session:
            models = session.scalars(query).all()
            return [model_info(session, model) for model in models]

    def model_team(self, name: str) -> str | None:
        """The team that owns model ``name``; ``None`` for a model from before teams."""
        with read_session(self.engine) as session:
            model = session.get(ModelRow, check_model_name(name))
            if model is None:
                raise NotFound(f"model '{name}' not found")
            return model.team

    def list_versions(self, name: str, *, include_archived: bool = False) -> list[ModelVersion]:
        check_model_name(name)
        query = select(ModelVersionRow).where(ModelVersionRow.model_name == name)
        if not include_archived:
            query = query.where(ModelVersionRow.archived.is_(False))
        with read_session(self.engine) as session:
            if session.get(ModelRow, name) is None:
                raise NotFound(f"model '{name}' not found")
            return versions_of(session, session.scalars(query.order_by(ModelVersionRow.version)))

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasChange]:
        """Every move of the model's aliases (or of one alias), oldest first."""
        query = select(AliasHistoryRow).where(AliasHistoryRow.model_name == name)
        if alias is not None:
            query = query.where(AliasHistoryRow.alias == alias)
        with read_session(self.engine) as session:
            rows = session.scalars(query.order_by(AliasHistoryRow.id))
            return [alias_change(row) for row in rows]

    def versions_reading_feature_set(
        self, name: str, version: int | None = None
    ) -> list[ModelVersion]:
        """Versions (archived included) whose lineage reads the feature set (at ``version``)."""
        ids = select(FeatureLineageRow.version_id).where(FeatureLineageRow.feature_set == name)
        if version is not None:
            ids = ids.where(FeatureLineageRow.feature_set_version == version)
        return self._versions_where(ModelVersionRow.id.in_(ids))

    def versions_trained_on(self, uri_or_sha256: str) -> list[ModelVersion]:
        """Versions (archived included) trained on a dataset, named by URI or sha256."""
        sha = uri_or_sha256.removeprefix("sha256:")
        match = DatasetLineageRow.uri == uri_or_sha256
        if len(sha) == 64:
            match = or_(match, DatasetLineageRow.sha256 == sha.lower())
        ids = select(DatasetLineageRow.version_id).where(match)
        return self._versions_where(ModelVersionRow.id.in_(ids))

    def audit_events(
        self,
        *,
        subject: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        limit: int = 100,
    ) -> list[audit.AuditRecord]:
        """Recorded changes, newest first."""
        with read_session(self.engine) as session:
            return audit.list_events(
                session, subject=subject, action=action, actor=actor, limit=limit
            )

    def verify_audit(self, anchors: Sequence[Anchor] = ()) -> audit.AuditReport:
        """Raise :class:`IntegrityError` naming the first audit event that was tampered with,
        checking the chain against ``anchors`` too."""
        with read_session(self.engine) as session:
            return audit.verify(session, anchors=anchors)

    def anchor_audit(self, anchors: Sequence[Anchor] = ()) -> Anchor:
        """Verify the audit chain, then sign its head as a new anchor (not yet stored)."""
        with read_session(self.engine) as session:
            return audit.anchor_head(session, at=self._now(), anchors=anchors)

    # -- signatures -----------------------------------------------------------------

    def add_signature(
        self,
        ref: str,
        *,
        key_id: str,
        public_key: str,
        signature: str,
        actor: str | None = None,
        reason: str = "",
    ) -> bool:
        """Store a signature of version ``ref`` (audited); False if that key already signed.

        The registry does not judge signatures: :mod:`modelplane.security.signing` checks
        each one against the version and the policy wherever it matters.
        """
        who = _check_actor(actor or self._actor)
        stored = VersionSignature(key_id, public_key, signature, who, self._now())

        def change(session: Session) -> bool:
            row = version_row(session, parse_ref(ref))
            added = add_signature(session, row.id, stored)
            if added:
                subject = f"{row.model_name}:{row.version}"
                after = {"key_id": key_id, "digest": row.digest}
                self._audit(session, who, "model.sign", subject, reason=reason, after=after)
            return added

        return self._write(change)

    def signatures(self, ref: str) -> list[VersionSignature]:
        """The signatures stored for version ``ref``, oldest first, unchecked."""
        with read_session(self.engine) as session:
            return signatures_of(session, version_row(session, parse_ref(ref)).id)

    # -- helpers --------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.wall(), UTC)

    def _write(self, change: Callable[[Session], T]) -> T:
        """Run ``change`` in a write transaction, again from the start if it lost a race."""
        for attempt in range(_ATTEMPTS):
            try:
                with write_session(self.engine) as session:
                    return change(session)
            except Conflict as exc:
                if not lost_race(exc) or attempt == _ATTEMPTS - 1:
                    raise
            # Jitter spreads the retries of writers that collided together.
            time.sleep(0.005 * 2**attempt * (1 + self._jitter.random()))
        raise AssertionError("unreachable")

    def _audit(
        self,
        session: Session,
        actor: str,
        action: str,
        subject: str,
        *,
        reason: str,
        before: Any = None,
        after: Any = None,
    ) -> None:
        event = audit.AuditEvent(actor, action, subject, self._now(), reason, before, after)
        audit.append(session, event)

    def _versions_where(self, condition: Any) -> list[ModelVersion]:
        query = select(ModelVersionRow).where(condition)
        query = query.order_by(ModelVersionRow.model_name, ModelVersionRow.version)
        with read_session(self.engine) as session:
            return versions_of(session, session.scalars(query))


def _claim(session: Session, model: ModelRow, team: str | None) -> None:
    """Give a new model to ``team``; refuse a push to another team's model."""
    if team is None:
        return
    if model.team is None:
        has_versions = session.scalar(
            select(func.count()).where(ModelVersionRow.model_name == model.name)
        )
        if has_versions:
            raise Forbidden(
                f"model '{model.name}' belongs to no team (it predates teams): only admin may"
                " push to it"
            )
        model.team = _check_team(team)
        return
    if model.team != team:
        raise Forbidden(f"model '{model.name}' belongs to team '{model.team}', not '{team}'")


def _check_team(team: str) -> str:
    try:
        return check_name(team)
    except ValueError as exc:
        raise InvalidSpec(
            f"team: {exc}", details=[{"field": "team", "problem": str(exc)}]
        ) from None


def _check_actor(actor: str) -> str:
    if not actor or not actor.strip() or len(actor) > 200:
        raise InvalidSpec("actor must be a non-empty name of at most 200 characters")
    return actor
