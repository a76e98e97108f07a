"""Usage: resources reserved against resources used, per replica and per shard, over time.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Times are epoch seconds (floats): rows are summed over periods by range, never shown raw.
    op.create_table(
        "usage_intervals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("team", sa.String(63), nullable=False),
        sa.Column("tier", sa.String(63), nullable=False),
        sa.Column("node", sa.String(63), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("endpoint", sa.String(63), nullable=True),
        sa.Column("route", sa.String(200), nullable=True),
        sa.Column("version", sa.String(200), nullable=True),
        sa.Column("replica", sa.Integer(), nullable=True),
        sa.Column("job", sa.String(200), nullable=True),
        sa.Column("shard", sa.Integer(), nullable=True),
        sa.Column("queue_wait_s", sa.Float(), nullable=True),
        sa.Column("cpu_milli", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("gpu_fraction", sa.Float(), nullable=False),
        sa.Column("gpu_model", sa.String(63), nullable=True),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("cpu_peak_milli", sa.Float(), nullable=True),
        sa.Column("memory_peak_mib", sa.Float(), nullable=False),
        sa.Column("memory_mean_mib", sa.Float(), nullable=True),
        sa.Column("gpu_util", sa.Float(), nullable=True),
        sa.Column("gpu_memory_mib", sa.Float(), nullable=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage_intervals"),
    )
    op.create_index("ix_usage_intervals_end", "usage_intervals", ["end"])
    op.create_index("ix_usage_intervals_team_end", "usage_intervals", ["team", "end"])
    op.create_table(
        "usage_nodes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("node", sa.String(63), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("cpu_milli", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("gpu_model", sa.String(63), nullable=True),
        sa.Column("cost_per_hour", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage_nodes"),
    )
    op.create_index("ix_usage_nodes_end", "usage_nodes", ["end"])


def downgrade() -> None:
    op.drop_table("usage_nodes")
    op.drop_table("usage_intervals")
