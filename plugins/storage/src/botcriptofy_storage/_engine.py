"""The async engine: pool settings, SQLite pragmas and real SQLite transactions."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ._driver import PostgresConnection, WriterGate, sqlite_connector
from ._settings import StorageSettings
from ._unavailable import DatabaseUnreachable, is_unreachable

# Execution option naming how a SQLite transaction begins: "DEFERRED" or "IMMEDIATE" (default: the sqlite_begin setting),
# which takes the write lock up front so that writers queue instead of failing with SQLITE_BUSY.
SQLITE_BEGIN = "botcriptofy_sqlite_begin"
# Key of a pooled PostgreSQL connection's info: the server process id behind it.
BACKEND_PID = "botcriptofy.backend_pid"


T = TypeVar("T")

# The writer gate of each SQLite engine's connections (see _driver.WriterGate), by the engine's sync side.
_GATES: weakref.WeakKeyDictionary[Engine, WriterGate] = weakref.WeakKeyDictionary()


def is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_engine(url: URL, settings: StorageSettings) -> AsyncEngine:
    """Create the engine for ``url``; for a SQLite file, create its directory first."""
    options: dict[str, Any] = {"echo": settings.echo, "pool_pre_ping": settings.pool_pre_ping}
    backend = url.get_backend_name()
    if not is_memory_sqlite(url):
        options.update(
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            pool_recycle=settings.pool_recycle,
        )
    if backend == "sqlite":
        if url.database and not is_memory_sqlite(url) and not url.database.startswith("file:"):
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # The sqlite3 module's own timeout is the busy timeout the PRAGMA below also sets. The connection is
        # the outbox-aware aiosqlite one (_driver), opened with the arguments SQLAlchemy would pass.
        args, kwargs = url.get_dialect()().create_connect_args(url)
        gate = WriterGate(settings.sqlite_busy_timeout)
        options["async_creator"] = sqlite_connector(args, {**kwargs, "timeout": settings.sqlite_busy_timeout}, gate)
    elif backend == "postgresql":
        # asyncpg's own connect timeout is 60 s: a server that does not answer must become a 503 as fast as a full pool.
        options["connect_args"] = {
            "server_settings": {"application_name": "botcriptofy"},
            "timeout": settings.connect_timeout,
            "connection_class": PostgresConnection,
        }
    engine = create_async_engine(url, **options)
    if backend == "sqlite":
        _GATES[engine.sync_engine] = gate
        _sqlite_events(engine.sync_engine, settings)
    else:
        _connect_errors(engine)
    _outbox_before_statements(engine)
    return engine


def _outbox_before_statements(engine: AsyncEngine) -> None:
    """Write outbox rows held for the COMMIT (see ``_driver``) before any other statement of their transaction."""

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _flush(connection: Connection, *_: Any) -> None:
        fairy = connection.connection
        if getattr(fairy.driver_connection, "outbox_rows", None):
            fairy.dbapi_connection.run_async(lambda driver: driver.flush_outbox())  # type: ignore[union-attr]


def note_backend_pid(dbapi_connection: Any, record: Any) -> None:
    """The ``connect`` listener: note the new connection's server process (signed tenant ids name it, see _rls.sign_tenant).

    This is the connection's first query. A server shutting down can end the connection under it
    (asyncpg then reports "another operation is in progress" or a lost connection): the connection
    never became usable, so that is the database being unreachable (a 503 to retry), not a 500.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT pg_backend_pid()")
        record.info[BACKEND_PID] = cursor.fetchone()[0]
    except Exception as error:
        raise DatabaseUnreachable(f"the new connection failed its first query: {type(error).__name__}: {error}") from error
    finally:
        cursor.close()


def _connect_errors(engine: AsyncEngine) -> None:
    """Turn a refused, timed-out or not-yet-accepting connect into ``DatabaseUnreachable`` (a 503 at the session boundary)."""

    event.listen(engine.sync_engine, "connect", note_backend_pid)

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as error:
            if is_unreachable(error):
                raise DatabaseUnreachable(f"cannot connect to the database: {type(error).__name__}: {error}") from error
            raise


def sqlite_writer(engine: AsyncEngine, settings: StorageSettings) -> SqliteWriter | None:
    """A :class:`SqliteWriter` on ``engine``'s SQLite file; None for other databases (and in-memory SQLite)."""
    gate = _GATES.get(engine.sync_engine)
    if gate is None or is_memory_sqlite(engine.url):
        return None
    immediate = settings.model_copy(update={"sqlite_begin": "immediate"})

    def sync_engine(timeout: float) -> Engine:
        sync = sqlalchemy.create_engine(
            engine.url.set(drivername="sqlite"),
            connect_args={"timeout": timeout, "check_same_thread": False},
            pool_size=1,
            max_overflow=2,
            echo=settings.echo,
        )
        _sqlite_events(sync, immediate.model_copy(update={"sqlite_busy_timeout": timeout}), autocheckpoint=timeout > 0)
        return sync

    return SqliteWriter(gate, now=sync_engine(0.0), patient=sync_engine(settings.sqlite_busy_timeout))


class SqliteWriter:
    """Short system write transactions on a SQLite file, their statements run back to back (``Database.write_batch``).

    Through aiosqlite every statement is a hand-off to the connection's thread and back, and between two
    of them the event loop serves other requests while the transaction holds SQLite's one write lock: a
    relay round of five statements held it 4-6 ms, and requests writing meanwhile waited for it. On a
    thread of its own the same transaction waited for the interpreter's lock instead (3 ms, the loop
    thread holds it up to the 5 ms switch interval). So the batch runs on the event loop itself, once the
    process's writer gate is ours (no writer of this process holds SQLite's lock then): its statements
    take a fraction of a millisecond of the loop, which they would take anyway. That connection never
    waits: its busy timeout is 0 and it does no WAL checkpoint (which syncs the file; the other
    connections' commits do them). Should another process hold the lock, the batch runs on a thread
    with the usual busy timeout instead.
    """

    def __init__(self, gate: WriterGate, *, now: Engine, patient: Engine) -> None:
        self.gate = gate
        self._now = now
        self._patient = patient

    async def run(self, work: Callable[[Connection], T]) -> T:
        token = object()
        await self.gate.enter(token)
        try:
            try:
                return _in_transaction(self._now, work)
            except sqlalchemy.exc.OperationalError as error:
                if "locked" not in str(error.orig) and "busy" not in str(error.orig):
                    raise
            return await asyncio.to_thread(_in_transaction, self._patient, work)
        finally:
            self.gate.leave(token)

    def dispose(self) -> None:
        self._now.dispose()
        self._patient.dispose()


def _in_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as connection:
        return work(connection)


def _sqlite_events(engine: Engine, settings: StorageSettings, *, autocheckpoint: bool = True) -> None:
    busy_ms = int(settings.sqlite_busy_timeout * 1000)
    default_mode = settings.sqlite_begin.upper()
    memory = is_memory_sqlite(engine.url)

    @event.listens_for(engine, "connect")
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
            if not autocheckpoint:
                cursor.execute("PRAGMA wal_autocheckpoint=0")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
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
