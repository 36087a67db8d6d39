"""Backtest jobs: tenant data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData(naming_convention={"ix": "ix_%(column_0_label)s", "pk": "pk_%(table_name)s"})


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        return value.astimezone(UTC) if dialect.name != "sqlite" else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


backtests = sa.Table(
    "trading_backtests",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),  # queued, running, succeeded, failed
    sa.Column("request", sa.JSON(), nullable=False),
    sa.Column("result", sa.JSON(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("finished_at", UtcDateTime(), nullable=True),
)

# -- bots: decimal amounts are strings (exact, the same on SQLite and PostgreSQL) -------------------

saved_strategies = sa.Table(
    "trading_strategies",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("strategy", sa.String(100), nullable=False),
    sa.Column("parameters", sa.JSON(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

bots = sa.Table(
    "trading_bots",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("strategy", sa.String(100), nullable=False),
    sa.Column("parameters", sa.JSON(), nullable=False),
    sa.Column("account_id", sa.String(36), nullable=False),
    sa.Column("source", sa.String(40), nullable=False),  # where its candles come from (the account's price source)
    sa.Column("symbol", sa.String(40), nullable=False),
    sa.Column("timeframe", sa.String(8), nullable=False),
    sa.Column("order_amount", sa.String(40), nullable=False),
    sa.Column("max_position", sa.String(40), nullable=False),
    sa.Column("max_daily_loss", sa.String(40), nullable=True),
    sa.Column("stop_loss_percent", sa.String(40), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # created, running, paused, stopped
    sa.Column("stop_reason", sa.String(40), nullable=True),
    sa.Column("run", sa.Integer(), nullable=False),  # incremented by every start: a runner of an older start exits
    sa.Column("workflow_id", sa.String(200), nullable=True),
    sa.Column("last_candle_at", UtcDateTime(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

decisions = sa.Table(
    "trading_bot_decisions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
    sa.Column("bot_id", sa.String(36), nullable=False),
    sa.Column("candle_time", UtcDateTime(), nullable=False),
    sa.Column("close", sa.String(40), nullable=False),
    sa.Column("signal", sa.Integer(), nullable=False),
    sa.Column("action", sa.String(20), nullable=False),  # buy, sell, hold, refused, stop_loss, daily_loss
    sa.Column("detail", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("bot_id", "candle_time", name="uq_trading_bot_decisions_candle"),
)

bot_orders = sa.Table(
    "trading_bot_orders",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
    sa.Column("bot_id", sa.String(36), nullable=False, index=True),
    sa.Column("decision_id", sa.String(36), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),  # the exchange order's idempotency key: bot id + candle time + side
    sa.Column("side", sa.String(4), nullable=False),
    sa.Column("amount", sa.String(40), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, filled, open, rejected
    sa.Column("exchange_order_id", sa.String(36), nullable=True),
    sa.Column("price", sa.String(40), nullable=True),
    sa.Column("fee", sa.String(40), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("closed_at", UtcDateTime(), nullable=True),
    sa.UniqueConstraint("bot_id", "key", name="uq_trading_bot_orders_key"),
)

bot_fills = sa.Table(
    "trading_bot_fills",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
    sa.Column("bot_id", sa.String(36), nullable=False, index=True),
    sa.Column("order_id", sa.String(36), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    sa.Column("price", sa.String(40), nullable=False),
    sa.Column("amount", sa.String(40), nullable=False),
    sa.Column("fee", sa.String(40), nullable=False),
    sa.Column("realised", sa.String(40), nullable=False),  # a sell's profit against the average entry, before fees
    sa.Column("filled_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("order_id", name="uq_trading_bot_fills_order_id"),
)
