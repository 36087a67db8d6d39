"""The runtime's table: one row per decision, platform data written and read through system sessions.

There is no ``tenant_id`` column on purpose: decisions belong to a department; the tenant a trigger
concerns is kept as ``subject_tenant`` (a pseudonymous id) for the record only.
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


decisions = sa.Table(
    "agents_decisions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("agent", sa.String(64), nullable=False),
    sa.Column("department", sa.String(32), nullable=False),
    sa.Column("trigger_kind", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(128), nullable=False),
    sa.Column("subject_tenant", sa.String(64), nullable=True),
    sa.Column("trigger", sa.JSON, nullable=False),
    sa.Column("context_digest", sa.String(64), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("model", sa.String(128), nullable=True),
    sa.Column("prompt_version", sa.String(16), nullable=False),
    sa.Column("raw_output", sa.Text, nullable=True),
    sa.Column("decision", sa.JSON, nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # "model" or "rules"
    sa.Column("fallback_reason", sa.String(32), nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("outcome_detail", sa.JSON, nullable=True),
    sa.Column("approval_id", sa.String(64), nullable=True),
    sa.Column("shadow", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Index("ix_agents_decisions_department_created", "department", "created_at"),
    sa.Index("ix_agents_decisions_agent_created", "agent", "created_at"),
    sa.Index("ix_agents_decisions_approval", "approval_id"),
)
