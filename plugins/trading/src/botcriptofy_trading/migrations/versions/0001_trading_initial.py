"""Backtest jobs.

Revision ID: trading_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from botcriptofy_trading._models import UtcDateTime

revision = "trading_0001"
down_revision = None
branch_labels = ("trading",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trading_backtests",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trading_backtests"),
    )
    op.create_index("ix_trading_backtests_tenant_id", "trading_backtests", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("trading_backtests")
