"""Tables: exchange accounts, paper balances, orders and fills (tenant data), candles (platform market data)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData(
    naming_convention={"ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s", "pk": "pk_%(table_name)s"}
)


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


# Amounts are decimal strings: exact, and the same on SQLite and PostgreSQL.
accounts = sa.Table(
    "exchanges_accounts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
    sa.Column("exchange", sa.String(40), nullable=False),
    sa.Column("label", sa.String(100), nullable=False),
    sa.Column("price_source", sa.String(40), nullable=True),
    sa.Column("api_key", sa.Text(), nullable=True),  # sealed by the kernel's secret box
    sa.Column("api_secret", sa.Text(), nullable=True),  # sealed by the kernel's secret box
    sa.Column("key_hint", sa.String(8), nullable=True),  # the key's last 4 characters
    sa.Column("permissions", sa.JSON(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

balances = sa.Table(
    "exchanges_balances",
    metadata,
    sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
    sa.Column("account_id", sa.String(36), primary_key=True),
    sa.Column("asset", sa.String(20), primary_key=True),
    sa.Column("free", sa.String(40), nullable=False),
    sa.Column("locked", sa.String(40), nullable=False),
    sa.Column("deposited", sa.String(40), nullable=False),
)

orders = sa.Table(
    "exchanges_orders",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
    sa.Column("account_id", sa.String(36), nullable=False, index=True),
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
    sa.Column("reserved", sa.String(40), nullable=False),  # what a resting paper order holds locked
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("closed_at", UtcDateTime(), nullable=True),
    sa.UniqueConstraint("account_id", "client_key", name="uq_exchanges_orders_client_key"),
)

fills = sa.Table(
    "exchanges_fills",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
    sa.Column("order_id", sa.String(36), nullable=False, index=True),
    sa.Column("price", sa.String(40), nullable=False),
    sa.Column("amount", sa.String(40), nullable=False),
    sa.Column("fee", sa.String(40), nullable=False),
    sa.Column("filled_at", UtcDateTime(), nullable=False),
)

# Market data is the platform's, shared by every tenant (no tenant_id). The key leads with the time
# column's series so a TimescaleDB hypertable can keep it.
candles = sa.Table(
    "marketdata_candles",
    metadata,
    sa.Column("exchange", sa.String(40), primary_key=True),
    sa.Column("symbol", sa.String(40), primary_key=True),
    sa.Column("timeframe", sa.String(8), primary_key=True),
    sa.Column("time", UtcDateTime(), primary_key=True),
    sa.Column("open", sa.Float(), nullable=False),
    sa.Column("high", sa.Float(), nullable=False),
    sa.Column("low", sa.Float(), nullable=False),
    sa.Column("close", sa.Float(), nullable=False),
    sa.Column("volume", sa.Float(), nullable=False),
)
