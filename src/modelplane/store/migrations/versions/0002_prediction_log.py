"""The prediction log: kept predictions (sampled, failed, fallbacks) for ``explain``.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# A frozen copy, not an import from schema.py: a migration must keep meaning what it meant.
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "prediction_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("endpoint", sa.String(63), nullable=False),
        sa.Column("contract", sa.String(63), nullable=False),
        sa.Column("contract_version", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=True),
        sa.Column("digest", sa.String(71), nullable=True),
        sa.Column("route", sa.String(200), nullable=True),
        sa.Column("route_kind", sa.String(16), nullable=False),
        sa.Column("fallback_reason", sa.String(63), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(63), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("queue_ms", sa.Float(), nullable=False),
        sa.Column("batch_ms", sa.Float(), nullable=False),
        sa.Column("compute_ms", sa.Float(), nullable=False),
        sa.Column("total_ms", sa.Float(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_prediction_log"),
    )
    op.create_index("ix_prediction_log_request_id", "prediction_log", ["request_id"])
    op.create_index("ix_prediction_log_at", "prediction_log", ["at"])


def downgrade() -> None:
    op.drop_table("prediction_log")
