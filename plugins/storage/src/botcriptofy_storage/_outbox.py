"""The transactional outbox: events are rows written in the publisher's transaction.

``botcriptofy_outbox`` holds one row per event; ``botcriptofy_outbox_delivery`` one row per event and
handler name, with its status, attempt count, next attempt time, lease and last error. The relay
(``_relay``) fills and works through the delivery rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Index, Integer, MetaData, String, Table, Text, insert
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from botcriptofy import Envelope

from ._database import Database
from ._tenancy import INFO_SYSTEM, INFO_TENANT, TenantScopeError, call_after_commit

metadata = MetaData()

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

events = Table(
    "botcriptofy_outbox",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("type", String(200), nullable=False),
    Column("payload", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("envelope_tenant_id", String(64)),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("dispatched_at", DateTime(timezone=True)),
    Index("ix_botcriptofy_outbox_dispatch", "dispatched_at", "created_at"),
)

deliveries = Table(
    "botcriptofy_outbox_delivery",
    metadata,
    Column("event_id", String(36), ForeignKey("botcriptofy_outbox.id", ondelete="CASCADE"), primary_key=True),
    Column("handler", String(200), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("locked_until", DateTime(timezone=True)),
    Column("locked_by", String(120)),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
    Index("ix_botcriptofy_outbox_delivery_due", "status", "next_attempt_at"),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite gives naive datetimes back; every time the outbox stores is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def envelope_from_row(row: Any, attempt: int) -> Envelope:
    return Envelope(id=row.id, type=row.type, payload=dict(row.payload), idempotency_key=row.idempotency_key,
                    occurred_at=as_utc(row.occurred_at), tenant_id=row.envelope_tenant_id, attempt=attempt)


class Outbox:
    """What the ``event_outbox`` hook provides: ``await outbox.add(envelopes, session=...)``."""

    def __init__(self, database: Database, wake: Callable[[], None]) -> None:
        self.database = database
        self.wake = wake

    async def add(self, envelopes: Sequence[Envelope], *, session: Any | None = None) -> None:
        """Store ``envelopes`` in ``session``'s transaction, or in a transaction of its own when ``session`` is None.

        They are delivered after that transaction commits, never if it rolls back. In a tenant session an
        envelope without a tenant gets the session's tenant; one of another tenant is refused.
        """
        if not envelopes:
            return
        if session is None:
            async with self.database.session(system=True) as own:
                await self.add(envelopes, session=own)
            return
        if not isinstance(session, AsyncSession):
            raise TypeError(f"the outbox writes in an AsyncSession from db.session(), not in {type(session).__name__}")
        tenant = None if session.info.get(INFO_SYSTEM) else session.info.get(INFO_TENANT)
        now = utcnow()
        rows = []
        for envelope in envelopes:
            owner = envelope.tenant_id
            if tenant is not None:
                if owner is None:
                    owner = tenant
                elif str(owner) != str(tenant):
                    raise TenantScopeError(f"refused to publish {envelope.type} for tenant {owner} in a session of tenant {tenant}")
            rows.append({
                "id": envelope.id, "type": envelope.type, "payload": envelope.payload, "idempotency_key": envelope.idempotency_key,
                "envelope_tenant_id": None if owner is None else str(owner), "occurred_at": envelope.occurred_at, "created_at": now,
                "dispatched_at": None,
            })
        await session.execute(insert(events), rows)
        call_after_commit(session.sync_session, self.wake)
