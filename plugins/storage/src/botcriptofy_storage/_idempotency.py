"""The durable ``Idempotency-Key`` store (the kernel's ``idempotency_store`` hook), one table shared by every worker.

``botcriptofy_idempotency`` holds one row per key (a digest of the caller and the client's key,
never the key itself): the request's fingerprint, its response once done, when it expires and,
while the request runs, until when its claim holds. Claiming is one ``INSERT ... ON CONFLICT DO
NOTHING`` (then a take-over ``UPDATE`` of an expired or abandoned row), so two workers racing for
one key never both run the request. Expired rows are deleted as keys are completed.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Integer, LargeBinary, String, Table, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB

from botcriptofy import IdempotencyRecord, StoredResponse

from ._database import Database
from ._outbox import metadata, utcnow

PURGE_EVERY = 600.0

keys = Table(
    "botcriptofy_idempotency",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status", Integer),
    Column("headers", JSON().with_variant(JSONB(), "postgresql")),
    Column("body", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("locked_until", DateTime(timezone=True)),
    Index("ix_botcriptofy_idempotency_expires", "expires_at"),
)


class IdempotencyStore:
    """The ``botcriptofy.IdempotencyStore`` protocol on the plugin's database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._purged = time.monotonic()

    def _insert(self) -> Any:
        return (postgresql.insert if self.database.dialect == "postgresql" else sqlite.insert)(keys)

    async def claim(self, key: str, fingerprint: str, *, ttl: float, lease: float) -> IdempotencyRecord | None:
        now = utcnow()
        fresh = {"fingerprint": fingerprint, "status": None, "headers": None, "body": None, "created_at": now,
                 "expires_at": now + timedelta(seconds=ttl), "locked_until": now + timedelta(seconds=lease)}
        async with self.database.session(system=True, write_lock=True) as session:
            inserted = await session.execute(self._insert().values(key=key, **fresh).on_conflict_do_nothing(index_elements=["key"]))
            if inserted.rowcount == 1:
                return None
            taken_over = await session.execute(
                update(keys)
                .where(keys.c.key == key, or_(keys.c.expires_at <= now, and_(keys.c.status.is_(None), keys.c.locked_until <= now)))
                .values(**fresh)
            )
            if taken_over.rowcount == 1:
                return None
            row = (await session.execute(select(keys).where(keys.c.key == key))).one()
        if row.status is None:
            return IdempotencyRecord(row.fingerprint)
        headers = tuple((str(name), str(value)) for name, value in row.headers or ())
        return IdempotencyRecord(row.fingerprint, StoredResponse(row.status, headers, bytes(row.body or b"")))

    async def complete(self, key: str, response: StoredResponse, *, ttl: float) -> None:
        now = utcnow()
        async with self.database.session(system=True) as session:
            await session.execute(
                update(keys)
                .where(keys.c.key == key)
                .values(status=response.status, headers=[list(pair) for pair in response.headers], body=response.body,
                        expires_at=now + timedelta(seconds=ttl), locked_until=None)
            )
            if time.monotonic() - self._purged > PURGE_EVERY:
                self._purged = time.monotonic()
                await session.execute(delete(keys).where(keys.c.expires_at <= now))

    async def release(self, key: str) -> None:
        async with self.database.session(system=True) as session:
            await session.execute(delete(keys).where(keys.c.key == key, keys.c.status.is_(None)))
