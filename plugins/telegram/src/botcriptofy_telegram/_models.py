"""The Telegram plugin's tables: platform data (no ``tenant_id``), read and written in system sessions."""

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


links = sa.Table(
    "telegram_links",
    metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("telegram_user_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("chat_id", sa.BigInteger, nullable=False),
    sa.Column("linked_at", UtcDateTime, nullable=False),
)

codes = sa.Table(
    "telegram_link_codes",
    metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("used_at", UtcDateTime),
)

callbacks = sa.Table(
    "telegram_callbacks",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("approval_id", sa.String(64), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),  # approve | reject | confirm | cancel
    sa.Column("created_at", UtcDateTime, nullable=False),
)

approval_messages = sa.Table(
    "telegram_approval_messages",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("approval_id", sa.String(64), nullable=False, index=True),
    sa.Column("chat_id", sa.BigInteger, nullable=False),
    sa.Column("message_id", sa.BigInteger, nullable=False),
)

leases = sa.Table(
    "telegram_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(120), nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("update_offset", sa.BigInteger),
)
