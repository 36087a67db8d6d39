"""Exchange accounts, paper balances, orders, fills, and the candles time series.

Revision ID: exchanges_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from botcriptofy_exchanges._models import UtcDateTime

revision = "exchanges_0001"
down_revision = None
branch_labels = ("exchanges",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchanges_accounts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("exchange", sa.String(40), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("price_source", sa.String(40), nullable=True),
        sa.Column("api_key", sa.Text(), nullable=True),
        sa.Column("api_secret", sa.Text(), nullable=True),
        sa.Column("key_hint", sa.String(8), nullable=True),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_exchanges_accounts"),
    )
    op.create_index("ix_exchanges_accounts_tenant_id", "exchanges_accounts", ["tenant_id"])
    op.create_table(
        "exchanges_balances",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("asset", sa.String(20), nullable=False),
        sa.Column("free", sa.String(40), nullable=False),
        sa.Column("locked", sa.String(40), nullable=False),
        sa.Column("deposited", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "asset", name="pk_exchanges_balances"),
    )
    op.create_index("ix_exchanges_balances_tenant_id", "exchanges_balances", ["tenant_id"])
    op.create_table(
        "exchanges_orders",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("client_key", sa.String(255), nullable=False),
        sa.Column("exchange_order_id", sa.String(100), nullable=True),
        sa.Column("symbol", sa.String(40), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("type", sa.String(10), nullable=False),
        sa.Column("amount", sa.String(40), nullable=False),
        sa.Column("price", sa.String(40), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("filled", sa.String(40), nullable=False),
        sa.Column("average", sa.String(40), nullable=True),
        sa.Column("fee", sa.String(40), nullable=False),
        sa.Column("fee_asset", sa.String(20), nullable=True),
        sa.Column("reserved", sa.String(40), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("closed_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_exchanges_orders"),
        sa.UniqueConstraint("account_id", "client_key", name="uq_exchanges_orders_client_key"),
    )
    op.create_index("ix_exchanges_orders_tenant_id", "exchanges_orders", ["tenant_id"])
    op.create_index("ix_exchanges_orders_account_id", "exchanges_orders", ["account_id"])
    op.create_table(
        "exchanges_fills",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("price", sa.String(40), nullable=False),
        sa.Column("amount", sa.String(40), nullable=False),
        sa.Column("fee", sa.String(40), nullable=False),
        sa.Column("filled_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_exchanges_fills"),
    )
    op.create_index("ix_exchanges_fills_tenant_id", "exchanges_fills", ["tenant_id"])
    op.create_index("ix_exchanges_fills_order_id", "exchanges_fills", ["order_id"])
    op.create_table(
        "marketdata_candles",
        sa.Column("exchange", sa.String(40), nullable=False),
        sa.Column("symbol", sa.String(40), nullable=False),
        sa.Column("timeframe", sa.String(8), nullable=False),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("open", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("close", sa.Float(), nullable=False),
        sa.Column("volume", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("exchange", "symbol", "timeframe", "time", name="pk_marketdata_candles"),
    )
    context.config.attributes["botcriptofy"].ensure_time_series("marketdata_candles", "time", tenant_column=None)


def downgrade() -> None:
    op.drop_table("marketdata_candles")
    op.drop_table("exchanges_fills")
    op.drop_table("exchanges_orders")
    op.drop_table("exchanges_balances")
    op.drop_table("exchanges_accounts")
