"""Initial schema: models, versions, aliases, lineage, audit chain, resources.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies, not imports from schema.py: a migration must keep meaning what it meant.
_TS = sa.DateTime(timezone=True)
_GENESIS_HASH = "0" * 64


def upgrade() -> None:
    _registry_tables()
    _alias_tables()
    _lineage_tables()
    _audit_tables()
    op.create_table(
        "resources",
        sa.Column("kind", sa.String(63), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.JSON(), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", name="pk_resources"),
    )


def _registry_tables() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_models"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("runtime", sa.String(32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.ForeignKeyConstraint(
            ["model_name"], ["models.name"], name="fk_model_versions_model_name_models"
        ),
        sa.UniqueConstraint("model_name", "version", name="uq_model_versions_model_name_version"),
        sa.UniqueConstraint("model_name", "digest", name="uq_model_versions_model_name_digest"),
    )


def _alias_tables() -> None:
    op.create_table(
        "aliases",
        sa.Column("model_name", sa.String(63), nullable=False),
        sa.Column("alias", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("model_name", "alias", name="pk_aliases"),
        sa.ForeignKeyConstraint(
            ["model_name", "version"],
            ["model_versions.model_name", "model_versions.version"],
            name="fk_aliases_model_name_version_model_versions",
        ),
    )
    op.create_table(
        "alias_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(63), nullable=False),
        sa.Column("alias", sa.String(63), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alias_history"),
    )
    op.create_index("ix_alias_history_model_name_alias", "alias_history", ["model_name", "alias"])


def _lineage_tables() -> None:
    op.create_table(
        "version_features",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("feature_set", sa.String(200), nullable=False),
        sa.Column("feature_set_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "version_id", "feature_set", "feature_set_version", name="pk_version_features"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name="fk_version_features_version_id_model_versions",
        ),
    )
    op.create_index(
        "ix_version_features_feature_set_feature_set_version",
        "version_features",
        ["feature_set", "feature_set_version"],
    )
    op.create_table(
        "version_datasets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_version_datasets"),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name="fk_version_datasets_version_id_model_versions",
        ),
    )
    op.create_index("ix_version_datasets_uri", "version_datasets", ["uri"])
    op.create_index("ix_version_datasets_sha256", "version_datasets", ["sha256"])
    op.create_index("ix_version_datasets_version_id", "version_datasets", ["version_id"])


def _audit_tables() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_events"),
    )
    for column in ("subject", "action", "actor"):
        op.create_index(f"ix_audit_events_{column}", "audit_events", [column])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": _GENESIS_HASH}])


def downgrade() -> None:
    for table in (
        "resources",
        "audit_head",
        "audit_events",
        "version_datasets",
        "version_features",
        "alias_history",
        "aliases",
        "model_versions",
        "models",
    ):
        op.drop_table(table)
