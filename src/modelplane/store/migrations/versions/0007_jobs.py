"""Jobs and their shards: the batch queue, resumable after a restart.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Times are epoch seconds: the queue compares and subtracts them on every pass.
    op.create_table(
        "jobs",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("uid", sa.String(36), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("team", sa.String(63), nullable=False),
        sa.Column("tier", sa.String(63), nullable=False),
        sa.Column("work_type", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("model_ref", sa.String(200), nullable=True),
        sa.Column("model_digest", sa.String(71), nullable=True),
        sa.Column("output_url", sa.Text(), nullable=True),
        sa.Column("submitted_at", sa.Float(), nullable=False),
        sa.Column("admitted_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("shards_total", sa.Integer(), nullable=False),
        sa.Column("rows_total", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_jobs"),
        sa.UniqueConstraint("uid", name="uq_jobs_uid"),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_team", "jobs", ["team"])
    op.create_table(
        "job_shards",
        sa.Column("job", sa.String(63), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("row_start", sa.BigInteger(), nullable=False),
        sa.Column("row_stop", sa.BigInteger(), nullable=False),
        sa.Column("row_groups", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=True),
        sa.Column("borrowed", sa.Boolean(), nullable=False),
        sa.Column("not_before", sa.Float(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("wall_seconds", sa.Float(), nullable=False),
        sa.Column("cpu_seconds", sa.Float(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("peak_memory_mib", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job"], ["jobs.name"], name="fk_job_shards_job_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job", "shard", name="pk_job_shards"),
    )
    op.create_index("ix_job_shards_state", "job_shards", ["state"])
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job", sa.String(63), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_job_events"),
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job", "id"])


def downgrade() -> None:
    op.drop_table("job_events")
    op.drop_table("job_shards")
    op.drop_table("jobs")
