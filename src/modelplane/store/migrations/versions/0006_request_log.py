"""Request log: a brief record of every request not otherwise kept, for a bounded time.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # ``at`` is epoch seconds: rows are written by the thousand, and trimmed by age.
    op.create_table(
        "request_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("endpoint", sa.String(63), nullable=False),
        sa.Column("contract", sa.String(63), nullable=False),
        sa.Column("contract_version", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=True),
        sa.Column("digest", sa.String(71), nullable=True),
        sa.Column("route", sa.String(200), nullable=True),
        sa.Column("route_kind", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("queue_ms", sa.Float(), nullable=False),
        sa.Column("batch_ms", sa.Float(), nullable=False),
        sa.Column("compute_ms", sa.Float(), nullable=False),
        sa.Column("total_ms", sa.Float(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_request_log"),
    )
    op.create_index("ix_request_log_request_id", "request_log", ["request_id"])
    op.create_index("ix_request_log_at", "request_log", ["at"])


def downgrade() -> None:
    op.drop_table("request_log")
