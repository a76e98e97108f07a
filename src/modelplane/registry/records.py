"""What the registry returns, and the row-level reads and locks it builds them with."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from types import MappingProxyType
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelplane.errors import NotFound
from modelplane.registry.refs import Ref, check_model_name
from modelplane.spec.manifest import Manifest, Runtime
from modelplane.store.schema import (
    AliasHistoryRow,
    AliasRow,
    DatasetLineageRow,
    FeatureLineageRow,
    ModelRow,
    ModelVersionRow,
)
from modelplane.types import Digest

__all__ = [
    "AliasChange",
    "ModelInfo",
    "ModelVersion",
    "add_lineage",
    "alias_change",
    "lock_model",
    "model_info",
    "version_row",
    "versions_of",
]


@dataclass(frozen=True)
class ModelVersion:
    """One immutable registered package."""

    name: str
    version: int
    digest: Digest
    runtime: Runtime
    created_at: datetime
    created_by: str
    aliases: tuple[str, ...]
    archived: bool
    manifest_data: Mapping[str, Any] = field(repr=False, compare=False)
    """The stored manifest as plain data; :attr:`manifest` validates it on first use."""

    @cached_property
    def manifest(self) -> Manifest:
        # Validating 10,000 manifests costs more than the listing that asked for them.
        return Manifest.model_validate(self.manifest_data)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model and where its versions and aliases stand."""

    name: str
    created_at: datetime
    archived: bool
    latest_version: int | None
    version_count: int
    aliases: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class AliasChange:
    """One move of an alias; ``None`` on a side means the alias did not exist."""

    name: str
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    at: datetime
    reason: str


def versions_of(session: Session, rows: Iterable[ModelVersionRow]) -> list[ModelVersion]:
    """Rows as :class:`ModelVersion`, with the aliases pointing at each (one query)."""
    rows = list(rows)
    aliases: dict[tuple[str, int], list[str]] = defaultdict(list)
    names = {row.model_name for row in rows}
    if names:
        for model_name, alias, version in session.execute(
            select(AliasRow.model_name, AliasRow.alias, AliasRow.version)
            .where(AliasRow.model_name.in_(names))
            .order_by(AliasRow.alias)
        ):
            aliases[(model_name, version)].append(alias)
    return [_to_version(row, tuple(aliases[(row.model_name, row.version)])) for row in rows]


def alias_change(row: AliasHistoryRow) -> AliasChange:
    return AliasChange(
        name=row.model_name,
        alias=row.alias,
        from_version=row.from_version,
        to_version=row.to_version,
        actor=row.actor,
        at=row.at,
        reason=row.reason,
    )


def lock_model(session: Session, name: str, *, create_at: datetime | None = None) -> ModelRow:
    """The model's row, locked for this transaction; created when ``create_at`` is given."""
    check_model_name(name)
    model = session.get(ModelRow, name, with_for_update=True)
    if model is not None:
        return model
    if create_at is None:
        raise NotFound(f"model '{name}' not found")
    # Two first pushes may both get here; the loser's primary key clash is retried.
    model = ModelRow(name=name, created_at=create_at, archived=False)
    session.add(model)
    session.flush()
    return model


def version_row(session: Session, ref: Ref) -> ModelVersionRow:
    query = select(ModelVersionRow).where(ModelVersionRow.model_name == ref.name)
    if ref.alias is not None:
        target = session.get(AliasRow, (ref.name, ref.alias))
        if target is None:
            raise NotFound(f"alias '{ref}' not found")
        query = query.where(ModelVersionRow.version == target.version)
    elif ref.version is not None:
        query = query.where(ModelVersionRow.version == ref.version)
    else:
        query = query.where(ModelVersionRow.archived.is_(False))
        query = query.order_by(ModelVersionRow.version.desc()).limit(1)
    row = session.scalars(query).first()
    if row is not None:
        return row
    if session.get(ModelRow, ref.name) is None:
        raise NotFound(f"model '{ref.name}' not found")
    if ref.version is None and ref.alias is None:
        raise NotFound(f"model '{ref.name}' has no versions that are not archived")
    raise NotFound(f"model version '{ref}' not found")


def add_lineage(session: Session, version_id: int, manifest: Manifest) -> None:
    features = {(f.feature_set, f.version) for f in manifest.lineage.features}
    for feature_set, feature_version in sorted(features):
        session.add(
            FeatureLineageRow(
                version_id=version_id, feature_set=feature_set, feature_set_version=feature_version
            )
        )
    for dataset in manifest.lineage.training_data:
        session.add(
            DatasetLineageRow(version_id=version_id, uri=dataset.uri, sha256=dataset.sha256)
        )


def _to_version(row: ModelVersionRow, aliases: tuple[str, ...]) -> ModelVersion:
    return ModelVersion(
        name=row.model_name,
        version=row.version,
        digest=Digest(row.digest),
        runtime=Runtime(row.runtime),
        created_at=row.created_at,
        created_by=row.created_by,
        aliases=aliases,
        archived=row.archived,
        manifest_data=row.manifest,
    )


def model_info(session: Session, model: ModelRow) -> ModelInfo:
    latest, count = session.execute(
        select(func.max(ModelVersionRow.version), func.count(ModelVersionRow.id)).where(
            ModelVersionRow.model_name == model.name, ModelVersionRow.archived.is_(False)
        )
    ).one()
    aliases = session.execute(
        select(AliasRow.alias, AliasRow.version)
        .where(AliasRow.model_name == model.name)
        .order_by(AliasRow.alias)
    ).all()
    return ModelInfo(
        name=model.name,
        created_at=model.created_at,
        archived=model.archived,
        latest_version=latest,
        version_count=count,
        aliases=MappingProxyType(dict(aliases)),
    )
