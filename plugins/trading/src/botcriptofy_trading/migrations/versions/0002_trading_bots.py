"""Bots, their decisions, orders and fills; saved strategies.

Revision ID: trading_0002
Revises: trading_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from botcriptofy_trading._models import UtcDateTime

revision = "trading_0002"
down_revision = "trading_0001"
branch_labels = None
depends_on = None

AMOUNT = sa.String(40)


def upgrade() -> None:
    op.create_table(
        "trading_strategies",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("strategy", sa.String(100), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trading_strategies"),
    )
    op.create_index("ix_trading_strategies_tenant_id", "trading_strategies", ["tenant_id"])
    op.create_table(
        "trading_bots",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("strategy", sa.String(100), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("symbol", sa.String(40), nullable=False),
        sa.Column("timeframe", sa.String(8), nullable=False),
        sa.Column("order_amount", AMOUNT, nullable=False),
        sa.Column("max_position", AMOUNT, nullable=False),
        sa.Column("max_daily_loss", AMOUNT, nullable=True),
        sa.Column("stop_loss_percent", AMOUNT, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stop_reason", sa.String(40), nullable=True),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(200), nullable=True),
        sa.Column("last_candle_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trading_bots"),
    )
    op.create_index("ix_trading_bots_tenant_id", "trading_bots", ["tenant_id"])
    op.create_table(
        "trading_bot_decisions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("bot_id", sa.String(36), nullable=False),
        sa.Column("candle_time", UtcDateTime(), nullable=False),
        sa.Column("close", AMOUNT, nullable=False),
        sa.Column("signal", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trading_bot_decisions"),
        sa.UniqueConstraint("bot_id", "candle_time", name="uq_trading_bot_decisions_candle"),
    )
    op.create_index("ix_trading_bot_decisions_tenant_id", "trading_bot_decisions", ["tenant_id"])
    op.create_table(
        "trading_bot_orders",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("bot_id", sa.String(36), nullable=False),
        sa.Column("decision_id", sa.String(36), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("exchange_order_id", sa.String(36), nullable=True),
        sa.Column("price", AMOUNT, nullable=True),
        sa.Column("fee", AMOUNT, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("closed_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trading_bot_orders"),
        sa.UniqueConstraint("bot_id", "key", name="uq_trading_bot_orders_key"),
    )
    op.create_index("ix_trading_bot_orders_tenant_id", "trading_bot_orders", ["tenant_id"])
    op.create_index("ix_trading_bot_orders_bot_id", "trading_bot_orders", ["bot_id"])
    op.create_table(
        "trading_bot_fills",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("bot_id", sa.String(36), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("price", AMOUNT, nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("fee", AMOUNT, nullable=False),
        sa.Column("realised", AMOUNT, nullable=False),
        sa.Column("filled_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_trading_bot_fills"),
        sa.UniqueConstraint("order_id", name="uq_trading_bot_fills_order_id"),
    )
    op.create_index("ix_trading_bot_fills_tenant_id", "trading_bot_fills", ["tenant_id"])
    op.create_index("ix_trading_bot_fills_bot_id", "trading_bot_fills", ["bot_id"])


def downgrade() -> None:
    for table in ("trading_bot_fills", "trading_bot_orders", "trading_bot_decisions", "trading_bots", "trading_strategies"):
        op.drop_table(table)
