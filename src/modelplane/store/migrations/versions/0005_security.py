"""Security: API tokens, team ownership of models, package signatures, keyed audit events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Only a hash of each secret is kept: a stolen database yields no usable token.
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("team", sa.String(63), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("endpoints", sa.JSON(), nullable=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
    )
    op.create_index("ix_api_tokens_team", "api_tokens", ["team"])
    # NULL: registered before teams owned models; readable by all, writable by admin only.
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("team", sa.String(63), nullable=True))
    op.create_table(
        "version_signatures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("signed_by", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name="fk_version_signatures_version_id_model_versions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_version_signatures"),
        sa.UniqueConstraint("version_id", "key_id", name="uq_version_signatures_version_id_key_id"),
    )
    # NULL for events written before the key existed: verify reports them as unkeyed.
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("mac", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("mac")
    op.drop_table("version_signatures")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("team")
    op.drop_index("ix_api_tokens_team", table_name="api_tokens")
    op.drop_table("api_tokens")
