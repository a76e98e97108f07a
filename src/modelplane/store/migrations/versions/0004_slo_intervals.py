"""SLO intervals: per-endpoint good and total request counts the SLO recorder keeps.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Counts are BigInteger: an hourly row of a busy endpoint can pass 2**31 on PostgreSQL.
    op.create_table(
        "slo_intervals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("endpoint", sa.String(63), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("span_s", sa.Float(), nullable=False),
        sa.Column("avail_good", sa.BigInteger(), nullable=False),
        sa.Column("avail_total", sa.BigInteger(), nullable=False),
        sa.Column("latency_good", sa.BigInteger(), nullable=False),
        sa.Column("latency_total", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_slo_intervals"),
    )
    op.create_index("ix_slo_intervals_endpoint_at", "slo_intervals", ["endpoint", "at"])


def downgrade() -> None:
    op.drop_table("slo_intervals")
