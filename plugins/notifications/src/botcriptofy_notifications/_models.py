"""The notifications plugin's tables.

``notifications_inbox`` and ``notifications_preferences`` carry ``tenant_id``: people read them
through tenant-scoped sessions. The delivery log, deduplication marks and leases are platform data
that only the router and the dispatcher (system sessions) write.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = sa.MetaData(naming_convention=NAMING)

QUEUED, SENT, FAILED, DEAD = "queued", "sent", "failed", "dead"
SUPPRESSED, DEDUPLICATED, FOLDED, DIGESTED = "suppressed", "deduplicated", "folded", "digested"
STATUSES = (QUEUED, SENT, FAILED, DEAD, SUPPRESSED, DEDUPLICATED, FOLDED, DIGESTED)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

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


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

deliveries = sa.Table(
    "notifications_deliveries",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("notification_id", sa.String(36), nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("address", sa.String(200), nullable=False),
    sa.Column("target", sa.String(64), nullable=False),  # the person's user id, or "*" for the whole address
    sa.Column("recipient", sa.JSON, nullable=True),
    sa.Column("category", sa.String(100), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("locale", sa.String(8), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("html", sa.Text, nullable=False),
    sa.Column("notification", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("locked_by", sa.String(120)),
    sa.Column("locked_until", UtcDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("digest_id", sa.BigInteger),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("sent_at", UtcDateTime),
    sa.UniqueConstraint("notification_id", "channel", "target", name="uq_notifications_deliveries_once"),
    sa.Index("ix_notifications_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_notifications_deliveries_flood", "channel", "target", "address", "created_at"),
)

inbox = sa.Table(
    "notifications_inbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("notification_id", sa.String(36), nullable=False),
    sa.Column("category", sa.String(100), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("actions", sa.JSON, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("read_at", UtcDateTime),
    sa.UniqueConstraint("notification_id", "user_id", name="uq_notifications_inbox_once"),
    sa.Index("ix_notifications_inbox_user", "user_id", "created_at"),
)

preferences = sa.Table(
    "notifications_preferences",
    metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("locale", sa.String(8)),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("quiet_start", sa.String(5)),
    sa.Column("quiet_end", sa.String(5)),
    sa.Column("channels", sa.JSON, nullable=False),  # {"billing.*": ["email"], "*": ["telegram", "email"]}
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

dedup = sa.Table(
    "notifications_dedup",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("last_at", UtcDateTime, nullable=False),
)

leases = sa.Table(
    "notifications_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(120), nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
)
