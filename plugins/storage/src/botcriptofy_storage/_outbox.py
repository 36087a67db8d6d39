"""The transactional outbox: events are rows written in the publisher's transaction.

``botcriptofy_outbox`` holds one row per event; ``botcriptofy_outbox_delivery`` one row per event and
handler name, with its status, attempt count, next attempt time, lease and last error. The relay
(``_relay``) fills and works through the delivery rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, Column, DateTime, ForeignKey, Index, Integer, MetaData, String, Table, Text, event, exc, insert
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from botcriptofy import Envelope

from ._database import Database
from ._driver import HeldInsert, PostgresConnection, SqliteConnection, pg_text
from ._tenancy import INFO_SYSTEM, INFO_TENANT, TenantScopeError, TenantSession, call_after_commit

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
    Column("envelope_metadata", JSON().with_variant(JSONB(), "postgresql")),
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
    return Envelope(
        id=row.id,
        type=row.type,
        payload=dict(row.payload),
        idempotency_key=row.idempotency_key,
        occurred_at=as_utc(row.occurred_at),
        tenant_id=row.envelope_tenant_id,
        attempt=attempt,
        metadata=dict(row.envelope_metadata or {}),
    )


_COLUMNS = ("id", "type", "payload", "idempotency_key", "envelope_tenant_id", "occurred_at", "created_at", "envelope_metadata")


_SqliteInsert = tuple[str, list[str], list[Callable[[Any], Any] | None]]


def _sqlite_insert(dialect: Dialect) -> _SqliteInsert:
    """The outbox INSERT as SQLite's driver takes it: SQL, parameter order, each column's bind processor."""
    compiled = insert(events).compile(dialect=dialect, column_keys=list(_COLUMNS))
    order = list(compiled.positiontup or ())
    if sorted(order) != sorted(_COLUMNS):
        raise RuntimeError(f"unexpected outbox insert parameters {order}")
    return str(compiled), order, [events.c[name].type.bind_processor(dialect) for name in order]


def json_text(value: Any) -> str:
    """``value`` (JSON data) as JSON text: orjson, about ten times faster than ``json.dumps`` on an event's payload.

    What orjson does not take (a dict key that is not a string, an int beyond 64 bits) is written by
    ``json.dumps``, as before. NaN and infinities become ``null``, as pydantic's JSON mode writes them
    (``json.dumps`` wrote ``NaN``, which PostgreSQL refuses).
    """
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value)


def _pg_json(value: Any) -> str:
    return "NULL" if value is None else f"{pg_text(json_text(value))}::jsonb"


def _pg_time(value: datetime) -> str:
    return f"{pg_text(as_utc(value).isoformat())}::timestamptz"


def _pg_string(value: Any) -> str:
    return "NULL" if value is None else pg_text(str(value))


def _pg_rows(rows: list[dict[str, Any]]) -> list[str]:
    """``rows`` as literal value lists in ``_COLUMNS``' order (values dollar-quoted, as SQLAlchemy's JSONB would encode them).

    A row's idempotency key is usually its id, and every row of one call has the same ``created_at``:
    each such literal is written once.
    """
    literals: list[str] = []
    created: tuple[datetime, str] | None = None
    for row in rows:
        identifier = _pg_string(row["id"])
        key = identifier if row["idempotency_key"] == row["id"] else _pg_string(row["idempotency_key"])
        if created is None or created[0] is not row["created_at"]:
            created = (row["created_at"], _pg_time(row["created_at"]))
        literals.append(
            f"({identifier}, {_pg_string(row['type'])}, {_pg_json(row['payload'])}, {key}, "
            f"{_pg_string(row['envelope_tenant_id'])}, {_pg_time(row['occurred_at'])}, {created[1]}, "
            f"{_pg_json(row['envelope_metadata'])})"
        )
    return literals


# The outbox INSERT as a PostgreSQL connection holds it: EXECUTEs of a statement each session PREPAREs once
# (parsed and planned once, about 25 µs less per row than a literal INSERT), or a literal INSERT.
_PG_INSERT = HeldInsert(
    name="botcriptofy_outbox_add",
    prepare=(
        "PREPARE botcriptofy_outbox_add(varchar, varchar, jsonb, varchar, varchar, timestamptz, timestamptz, jsonb) AS "
        f"INSERT INTO {events.name} ({', '.join(_COLUMNS)}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8);"
    ),
    head=f"INSERT INTO {events.name} ({', '.join(_COLUMNS)}) VALUES ",
)


# Key of a session's info: (transaction, dialect, driver connection), noted when a transaction or savepoint
# begins on its connection, so a publish in a transaction that has run a statement needs no greenlet hop.
INFO_DRIVER = "botcriptofy.outbox_driver"


@event.listens_for(TenantSession, "after_begin")
def _note_driver(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    session.info[INFO_DRIVER] = (transaction, connection.dialect, connection.connection.driver_connection)


def _driver_of(session: Session) -> tuple[Dialect, Any]:
    """The dialect and driver connection of ``session``'s transaction (one hop into SQLAlchemy's greenlet, not two)."""
    connection = session.connection()
    return connection.dialect, connection.connection.driver_connection


async def _driver(session: AsyncSession) -> tuple[Dialect, Any]:
    """The dialect and driver connection of ``session``'s transaction, beginning it when it has not begun.

    Noted at the begin when the innermost transaction (a savepoint's included) has begun on the connection:
    a publish after its first statement, the usual case, saves the greenlet hop (about 25 µs, measured in
    bench/notifications_bench.py). A savepoint begun but not yet emitted takes the hop, which emits it, so
    rolling the savepoint back drops what was published in it.
    """
    sync = session.sync_session
    noted = sync.info.get(INFO_DRIVER)
    if noted is not None and noted[0].is_active and noted[0] is (sync.get_nested_transaction() or sync.get_transaction()):
        return noted[1], noted[2]
    return await session.run_sync(_driver_of)


class Outbox:
    """What the ``event_outbox`` hook provides: ``await outbox.add(envelopes, session=...)``."""

    def __init__(self, database: Database, wake: Callable[[], None]) -> None:
        self.database = database
        self.wake = wake
        self._sqlite: _SqliteInsert | None = None

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
            rows.append(
                {
                    "id": envelope.id,
                    "type": envelope.type,
                    "payload": envelope.payload,
                    "idempotency_key": envelope.idempotency_key,
                    "envelope_tenant_id": None if owner is None else str(owner),
                    "occurred_at": envelope.occurred_at,
                    "created_at": now,
                    "dispatched_at": None,
                    "envelope_metadata": envelope.metadata or None,
                }
            )
        if self.database.dialect == "sqlite":
            await self._insert_sqlite(session, rows)
        elif not await self._hold_postgresql(session, rows):
            await session.execute(insert(events), rows)
        call_after_commit(session.sync_session, self.wake)

    async def _hold_postgresql(self, session: AsyncSession, rows: list[dict[str, Any]]) -> bool:
        """Hand ``rows`` to the connection to send with the COMMIT (one round trip for both, see ``_driver``).

        False, and nothing held, when the connection is not the storage plugin's, its transaction has not
        begun yet, or a value cannot be a literal (a NUL character): the caller then inserts at once.
        """
        _dialect, driver = await _driver(session)
        if not isinstance(driver, PostgresConnection):
            return False
        try:
            values = _pg_rows(rows)
        except ValueError:
            return False
        return driver.hold_outbox(_PG_INSERT, values)

    async def _insert_sqlite(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` with one call to the driver's thread instead of three.

        Through SQLAlchemy an INSERT on aiosqlite is three hand-offs to the connection's thread (open a
        cursor, execute, close it); a whole request that writes one row is about eight. The rows are
        converted by SQLAlchemy's own bind processors and written in the session's transaction on the
        same connection, so commit and rollback treat them like any other statement. On the storage
        plugin's own connections they are held and written in the same call as the COMMIT (``_driver``),
        so a publish right before the commit costs no call of its own. Measured in
        bench/notifications_bench.py.
        """
        dialect, driver = await _driver(session)
        if self._sqlite is None:
            self._sqlite = _sqlite_insert(dialect)
        sql, order, processors = self._sqlite
        params = [
            tuple(process(row[name]) if process is not None else row[name] for name, process in zip(order, processors, strict=True))
            for row in rows
        ]
        if isinstance(driver, SqliteConnection) and driver.hold_outbox(sql, params):
            return  # written in the same call to the driver's thread as the COMMIT (see _driver)
        try:
            await driver.executemany(sql, params)
        except Exception as error:
            raise exc.DBAPIError.instance(sql, params, error, dialect.loaded_dbapi.Error, dialect=dialect) from error
