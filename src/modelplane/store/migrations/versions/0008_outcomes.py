"""Outcomes: ground truth and business outcomes joined to what was answered.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Times are epoch seconds, as in request_log: answers are written by the thousand.
    op.create_table(
        "answers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("endpoint", sa.String(63), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("route", sa.String(200), nullable=True),
        sa.Column("route_kind", sa.String(16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("feature_sets", sa.JSON(), nullable=True),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_answers"),
    )
    op.create_index("ix_answers_endpoint_request_id", "answers", ["endpoint", "request_id"])
    op.create_index("ix_answers_at", "answers", ["at"])
    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("endpoint", sa.String(63), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("arrived_at", sa.Float(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outcomes"),
        sa.UniqueConstraint(
            "endpoint",
            "request_id",
            "row",
            "name",
            name="uq_outcomes_endpoint_request_id_row_name",
        ),
    )
    op.create_index("ix_outcomes_endpoint_arrived_at", "outcomes", ["endpoint", "arrived_at"])


def downgrade() -> None:
    op.drop_table("outcomes")
    op.drop_table("answers")
