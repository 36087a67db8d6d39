"""The async engine: pool settings, SQLite pragmas and real SQLite transactions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ._settings import StorageSettings

# Execution option naming how a SQLite transaction begins: "DEFERRED" or "IMMEDIATE" (default: the sqlite_begin setting),
# which takes the write lock up front so that writers queue instead of failing with SQLITE_BUSY.
SQLITE_BEGIN = "botcriptofy_sqlite_begin"


def is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_engine(url: URL, settings: StorageSettings) -> AsyncEngine:
    """Create the engine for ``url``; for a SQLite file, create its directory first."""
    options: dict[str, Any] = {"echo": settings.echo, "pool_pre_ping": settings.pool_pre_ping}
    backend = url.get_backend_name()
    if not is_memory_sqlite(url):
        options.update(pool_size=settings.pool_size, max_overflow=settings.max_overflow, pool_timeout=settings.pool_timeout,
                       pool_recycle=settings.pool_recycle)
    if backend == "sqlite":
        if url.database and not is_memory_sqlite(url) and not url.database.startswith("file:"):
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # The sqlite3 module's own timeout is the busy timeout the PRAGMA below also sets.
        options["connect_args"] = {"timeout": settings.sqlite_busy_timeout}
    elif backend == "postgresql":
        options["connect_args"] = {"server_settings": {"application_name": "botcriptofy"}}
    engine = create_async_engine(url, **options)
    if backend == "sqlite":
        _sqlite_events(engine, settings)
    return engine


def _sqlite_events(engine: AsyncEngine, settings: StorageSettings) -> None:
    busy_ms = int(settings.sqlite_busy_timeout * 1000)
    default_mode = settings.sqlite_begin.upper()
    memory = is_memory_sqlite(engine.url)

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transactions away from the sqlite3 module (it skips BEGIN before DDL and SAVEPOINT
        # handling); the "begin" listener below emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN, default_mode)
        connection.exec_driver_sql(f"BEGIN {mode}")


def sqlite_pragma_outside_transaction(connection: Connection, statement: str) -> list[Any]:
    """Run a PRAGMA on the connection's DB-API connection, outside any transaction (where PRAGMAs take effect)."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
        return list(cursor.fetchall())
    finally:
        cursor.close()
