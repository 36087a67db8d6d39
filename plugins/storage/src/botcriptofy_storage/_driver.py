"""Driver connections that write outbox rows in the same driver call as the transaction's next statement or COMMIT.

An outbox row is one more statement in the publisher's transaction: on SQLite one more hand-off to
aiosqlite's thread, on PostgreSQL one more round trip. Most publishers write it last, right before
the commit, so the storage plugin's connections hold it back and send it with the COMMIT:

* SQLite (:class:`SqliteConnection`): the rows and the COMMIT run in one call on the connection's
  thread (``executemany`` then ``commit``);
* PostgreSQL (:class:`PostgresConnection`, asyncpg's ``connection_class``): the INSERT and the COMMIT
  travel in one simple-query message. The values are sent as dollar-quoted literals whose delimiter
  is chosen so that it cannot occur in the value (:func:`pg_text`).

Durability is the same as writing the row at once: the rows are in the same transaction. If the
INSERT fails the COMMIT does not run (SQLite: the thread call stops at the error; PostgreSQL: a failing
statement skips the rest of the message, and the connection rolls the transaction back), and the
caller sees the error from ``commit()``. A ROLLBACK drops the held rows. Any other statement of the
transaction first writes them (the ``before_cursor_execute`` listener in ``_engine``), so the
transaction reads its own outbox rows and savepoints treat them as they would any write.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiosqlite
import asyncpg  # type: ignore[import-untyped]

# Statements that take no write lock; anything else (INSERT, UPDATE, DELETE, DDL, BEGIN IMMEDIATE...) may.
_READS = ("SELECT", "BEGIN DEFERRED", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA", "EXPLAIN", "VALUES")


# The functions aiosqlite runs on its thread that execute SQL (their first argument); others (cursor(), commit(),
# create_function()...) take no lock of their own.
_RUNS_SQL = frozenset({"execute", "executemany", "executescript", "_execute_insert", "_execute_fetchall", "_write_and_commit"})


def _may_write(fn: Any, args: tuple[Any, ...]) -> bool:
    if getattr(fn, "__name__", "") not in _RUNS_SQL or not args or not isinstance(args[0], str):
        return False
    head = args[0].lstrip()[:16].upper()
    return not (head.startswith(_READS) or head.rstrip(";") == "BEGIN")


class WriterGate:
    """The process's queue for SQLite's one writer: its connections take turns here instead of in SQLite's busy handler.

    Two connections of one process that write at once otherwise meet in SQLite's busy handler, which
    sleeps 1, 2, 5, 10... ms between attempts: a request that writes while the outbox relay records its
    round waited several milliseconds for a lock held for one. A connection takes the gate before the
    first statement that may write and gives it back when its transaction ends, the span SQLite holds
    its write lock, so whoever gets the gate finds the lock free (unless another process holds it: the
    busy handler still arbitrates between processes). Waiting longer than the busy timeout raises
    "database is locked", as SQLite would.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self.holder: object | None = None

    async def enter(self, connection: object) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self._lock.acquire()
        except TimeoutError:
            raise sqlite3.OperationalError("database is locked") from None
        self.holder = connection

    def leave(self, connection: object) -> None:
        if self.holder is connection:
            self.holder = None
            self._lock.release()


class SqliteConnection(aiosqlite.Connection):
    """An aiosqlite connection that writes held outbox rows in the same thread call as COMMIT, and queues its writes at a gate.

    The combined call goes through the base class's own queue to its thread (``_execute``, what
    every aiosqlite method uses; aiosqlite is pinned in requirements/constraints.txt and
    tests/plugins/storage/test_storage_outbox_commit.py exercises the path on every run). The same
    funnel takes the process's :class:`WriterGate` before a statement that may write.
    """

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int = 64, gate: WriterGate | None = None) -> None:
        super().__init__(connector, iter_chunk_size)
        self.outbox_sql = ""
        self.outbox_rows: list[Sequence[Any]] = []
        self.gate = gate

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        gate = self.gate
        if gate is None:
            return await super()._execute(fn, *args, **kwargs)
        if gate.holder is not self and _may_write(fn, args):
            await gate.enter(self)
        try:
            return await super()._execute(fn, *args, **kwargs)
        finally:
            if gate.holder is self and not self._in_transaction():
                gate.leave(self)  # committed, rolled back, or a write outside a transaction finished

    def _in_transaction(self) -> bool:
        connection = self._connection
        if connection is None:
            return False
        try:
            return connection.in_transaction
        except sqlite3.ProgrammingError:  # closed (the pool terminated it mid-transaction): nothing is held any more
            return False

    def hold_outbox(self, sql: str, rows: Sequence[Sequence[Any]]) -> bool:
        """Hold ``rows`` (parameters of ``sql``) until the next statement or COMMIT; False when no transaction is open."""
        if not self.in_transaction or (self.outbox_rows and sql != self.outbox_sql):
            return False
        self.outbox_sql = sql
        self.outbox_rows.extend(rows)
        return True

    def _take(self) -> tuple[str, list[Sequence[Any]]]:
        rows, self.outbox_rows = self.outbox_rows, []
        return self.outbox_sql, rows

    async def flush_outbox(self) -> None:
        """Write the held rows now (before another statement of the same transaction)."""
        if self.outbox_rows:
            sql, rows = self._take()
            await self.executemany(sql, rows)

    def _write_and_commit(self, sql: str, rows: list[Sequence[Any]]) -> None:
        # On the connection's thread. An INSERT that fails rolls the transaction back here: the caller sees
        # its COMMIT fail, and SQLAlchemy does not roll back a connection whose COMMIT raised.
        connection = self._conn
        try:
            connection.executemany(sql, rows)
        except BaseException:
            connection.rollback()
            raise
        connection.commit()

    async def commit(self) -> None:
        if not self.outbox_rows:
            await super().commit()
            return
        sql, rows = self._take()
        await self._execute(self._write_and_commit, sql, rows)  # type: ignore[no-untyped-call]

    async def rollback(self) -> None:
        self.outbox_rows = []
        await super().rollback()

    async def close(self) -> None:
        self.outbox_rows = []
        try:
            await super().close()
        finally:
            if self.gate is not None:
                self.gate.leave(self)


def sqlite_connector(args: Sequence[Any], kwargs: dict[str, Any], gate: WriterGate | None = None) -> Callable[[], SqliteConnection]:
    """The ``async_creator`` of a SQLite engine: ``sqlite3.connect(*args, **kwargs)`` on a :class:`SqliteConnection`'s thread.

    The engine's connections share ``gate`` (see :class:`WriterGate`).
    """

    def create() -> SqliteConnection:
        return SqliteConnection(partial(sqlite3.connect, *args, **kwargs), gate=gate)

    return create


def pg_text(value: str) -> str:
    """``value`` as a PostgreSQL dollar-quoted literal: no escaping, a delimiter that cannot end it early.

    The server takes everything up to the first occurrence of the delimiter as the value, so the
    delimiter is lengthened until its first occurrence in ``value + delimiter`` is the closing one.
    A NUL character, which no PostgreSQL text holds, is refused (ValueError).
    """
    if "$" not in value:  # the usual case: no delimiter can occur in it
        if "\x00" in value:
            raise ValueError("PostgreSQL text cannot hold a NUL character")
        return f"$o${value}$o$"
    if "\x00" in value:
        raise ValueError("PostgreSQL text cannot hold a NUL character")
    tag = "o"
    while True:
        delimiter = f"${tag}$"
        if (value + delimiter).find(delimiter) == len(value):
            return f"{delimiter}{value}{delimiter}"
        tag += "o"


@dataclass(frozen=True, slots=True)
class HeldInsert:
    """An INSERT a :class:`PostgresConnection` holds: as EXECUTEs of statement ``name`` (PREPAREd by ``prepare``), or ``head`` + rows."""

    name: str
    prepare: str  # "PREPARE <name>(<types>) AS INSERT ... VALUES ($1, ...);"
    head: str  # "INSERT INTO <table> (<columns>) VALUES "


class PostgresConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection that sends held outbox statements in the same message as COMMIT."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outbox_rows: list[str] = []
        self.prepared: set[str] = set()  # the HeldInsert names this session has PREPAREd
        self._preparing: list[HeldInsert] = []  # PREPAREs that go first in the next message
        self._may_prepare = True

    def hold_outbox(self, insert: HeldInsert, values: Sequence[str]) -> bool:
        """Hold an INSERT of ``values`` (one literal row each) until the next statement or COMMIT; False outside a transaction.

        The rows are EXECUTEs of ``insert``'s prepared statement, PREPAREd by the first message that
        carries one (a PREPARE outlives rollbacks: the name stays for the session's life). After a
        message carrying a PREPARE fails, whether it ran is unknown, so the session goes back to plain
        INSERTs of literal rows.
        """
        if not self.is_in_transaction():
            return False
        if insert.name not in self.prepared and self._may_prepare and insert not in self._preparing:
            self._preparing.append(insert)
        if insert.name in self.prepared or insert in self._preparing:
            self.outbox_rows.extend(f"EXECUTE {insert.name}{row};" for row in values)
        else:
            self.outbox_rows.append(f"{insert.head}{', '.join(values)};")
        return True

    def _take(self) -> str:
        statements, self.outbox_rows = self.outbox_rows, []
        return "".join(insert.prepare for insert in self._preparing) + "".join(statements)

    async def _send(self, query: str, timeout: float | None = None) -> str:  # noqa: ASYNC109 - asyncpg's signature
        """Send ``query`` (held statements first): on success the PREPAREs it carried are known to be done."""
        preparing, self._preparing = self._preparing, []
        try:
            status = str(await super().execute(query, timeout=timeout))
        except BaseException:
            if preparing:
                self._may_prepare = False
            raise
        self.prepared.update(insert.name for insert in preparing)
        return status

    async def flush_outbox(self) -> None:
        """Write the held statements now (before another statement of the same transaction)."""
        if self.outbox_rows:
            await self._send(self._take())

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:  # noqa: ASYNC109 - asyncpg's signature
        if not self.outbox_rows:
            return str(await super().execute(query, *args, timeout=timeout))
        if query == "ROLLBACK;":
            self.outbox_rows, self._preparing = [], []
            return str(await super().execute(query, timeout=timeout))
        if args or query != "COMMIT;":
            await self.flush_outbox()
            return str(await super().execute(query, *args, timeout=timeout))
        try:
            return await self._send(self._take() + query, timeout=timeout)
        except BaseException:
            # An INSERT that failed skipped the COMMIT and left the transaction aborted; the caller has
            # already let go of it (asyncpg and SQLAlchemy drop a transaction whose COMMIT raised).
            if not self.is_closed() and self.is_in_transaction():
                with contextlib.suppress(Exception):
                    await super().execute("ROLLBACK;")
            raise
