"""Readings: a time series table (a hypertable where TimescaleDB is installed).

Revision ID: sample_0002
Revises: sample_0001
Create Date: 2025-01-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "sample_0002"
down_revision: str | Sequence[str] | None = "sample_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sample_readings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", "time"),
    )
    # The storage plugin's helper: a hypertable with TimescaleDB, else an index on (tenant_id, time DESC).
    context.config.attributes["botcriptofy"].ensure_time_series("sample_readings", "time")


def downgrade() -> None:
    op.drop_table("sample_readings")
