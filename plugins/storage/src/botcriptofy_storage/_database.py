"""The database that the ``database`` hook provides: an engine and tenant-scoped units of work."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from ._engine import SQLITE_BEGIN, SqliteWriter
from ._rls import apply_row_level_security
from ._tenancy import INFO_KEY, INFO_ROLE, INFO_SYSTEM, INFO_TENANT, TenantSession
from ._timeseries import ensure_time_series
from ._unavailable import UnavailableStats, reason_of, unavailable

BeforeSession = Callable[[], Awaitable[None]]
T = TypeVar("T")


class Database:
    """SQLAlchemy 2 async engine plus sessions scoped to a tenant (the ``botcriptofy.Database`` protocol).

    ``url`` is the full URL (with its password: do not log it; ``repr`` masks it), ``dialect`` is
    ``"sqlite"`` or ``"postgresql"`` and ``engine`` is the ``AsyncEngine``.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        rls_role: str = "",
        system_engine: AsyncEngine | None = None,
        stats: UnavailableStats | None = None,
        retry_after: float = 2.0,
        tenant_key: bytes | None = None,
        writer: SqliteWriter | None = None,
    ) -> None:
        self.engine = engine
        self._writer = writer
        # System-wide sessions (platform jobs, the outbox relay) on a connection of their own: on PostgreSQL a role that
        # bypasses row-level security, which no tenant session can become.
        self.system_engine = system_engine
        self.url = engine.url.render_as_string(hide_password=False)
        self.dialect = engine.dialect.name
        # Shared with every bound view, so that turning role switching on after an upgrade reaches them all.
        self._shared: dict[str, Any] = {
            "rls_role": rls_role if self.dialect == "postgresql" else "",
            "retry_after": retry_after,
            "tenant_key": tenant_key,
            "declared": {},
        }
        self.stats = stats or UnavailableStats()
        self._maker = self._makers(engine)
        self._system_maker = self._makers(system_engine) if system_engine is not None else self._maker
        self._before_session: BeforeSession | None = None

    @staticmethod
    def _makers(engine: AsyncEngine) -> tuple[async_sessionmaker[AsyncSession], async_sessionmaker[AsyncSession]]:
        plain = async_sessionmaker(engine, sync_session_class=TenantSession, expire_on_commit=False)
        immediate = async_sessionmaker(
            engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"}), sync_session_class=TenantSession, expire_on_commit=False
        )
        return plain, immediate

    def __repr__(self) -> str:
        return f"<Database {self.engine.url.render_as_string(hide_password=True)}>"

    @property
    def rls_role(self) -> str:
        """The role sessions switch to on PostgreSQL ("" when they keep the login role)."""
        return str(self._shared["rls_role"])

    @rls_role.setter
    def rls_role(self, role: str) -> None:
        self._shared["rls_role"] = role if self.dialect == "postgresql" else ""

    @property
    def retry_after(self) -> float:
        """Retry-After, in seconds, of the 503 answered when the database cannot serve (the ``retry_after`` setting)."""
        return float(self._shared["retry_after"])

    @retry_after.setter
    def retry_after(self, seconds: float) -> None:
        self._shared["retry_after"] = seconds

    def bound(self, before_session: BeforeSession) -> Database:
        """Return a view of this database whose first session awaits ``before_session()`` (used per kernel generation)."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view._before_session = before_session
        return view

    @asynccontextmanager
    async def session(
        self, *, tenant_id: str | uuid.UUID | None = None, system: bool = False, write_lock: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """Open a unit of work: an ``AsyncSession`` whose transaction commits when the block succeeds and rolls back on error.

        :param tenant_id: scope every ORM statement and new row to this tenant (and, on PostgreSQL, row-level security).
        :param system: open an unscoped session for platform jobs; exclusive with ``tenant_id``.
        :param write_lock: on SQLite, take the write lock when the transaction begins (``BEGIN IMMEDIATE``), so a
            read-then-write transaction queues behind other writers instead of failing; no effect on PostgreSQL.
        """
        if system and tenant_id is not None:
            raise ValueError("a session is either scoped to a tenant or a system session, not both")
        if tenant_id is not None and not str(tenant_id).strip():
            raise ValueError("tenant_id must not be empty")
        if self._before_session is not None:
            await self._before_session()
        plain, immediate = self._system_maker if system else self._maker
        maker = immediate if write_lock and self.dialect == "sqlite" else plain
        try:
            async with maker() as session:
                session.info[INFO_TENANT] = None if tenant_id is None else str(tenant_id)
                session.info[INFO_SYSTEM] = bool(system)
                # System sessions keep their login role: the system connection's role, or in development a superuser.
                session.info[INFO_ROLE] = "" if system else self.rls_role
                session.info[INFO_KEY] = None if system or self.dialect != "postgresql" else self._shared["tenant_key"]
                try:
                    yield session
                except BaseException:
                    with contextlib.suppress(Exception):  # the error that got us here is the one to report
                        await asyncio.shield(session.rollback())
                    raise
                await session.commit()
        except Exception as error:
            mapped = self._unavailable(error)
            if mapped is error:
                raise
            raise mapped from error

    async def ping(self) -> bool:
        """Run ``SELECT 1``: the readiness check."""
        async with self.engine.connect() as connection:
            return bool((await connection.execute(text("SELECT 1"))).scalar_one() == 1)

    async def ensure_time_series(
        self, table: str, time_column: str, *, tenant_column: str | None = "tenant_id", chunk_interval: str | timedelta | None = None
    ) -> str:
        """Make ``table`` a time series: a TimescaleDB hypertable when the extension is installed, else an indexed table.

        The index covers ``(tenant_column, time_column DESC)`` when the table has the tenant column, else
        ``(time_column DESC)``. Idempotent. Returns ``"hypertable"`` or ``"index"``.
        """
        async with self.engine.begin() as connection:
            return await connection.run_sync(
                ensure_time_series, table, time_column, tenant_column=tenant_column, chunk_interval=chunk_interval
            )

    @property
    def declared_tenant_columns(self) -> dict[str, str | None]:
        """Scoping columns that enabled plugins' models declare (``Table.info["tenant_column"]``), by table name."""
        return dict(self._shared["declared"])

    @declared_tenant_columns.setter
    def declared_tenant_columns(self, declared: dict[str, str | None]) -> None:
        self._shared["declared"] = dict(declared)

    async def enable_row_level_security(self) -> list[str]:
        """On PostgreSQL, apply the tenant policy to every tenant table that lacks it; return the tenant tables' names.

        Migrations run it for you; call it after creating tables outside migrations (the login role must own
        them). Tables already secured are left untouched. No-op on SQLite.
        """
        if self.dialect != "postgresql":
            return []
        async with self.engine.begin() as connection:
            return await connection.run_sync(
                lambda sync: apply_row_level_security(sync, self.declared_tenant_columns, self.rls_role, key=self._shared["tenant_key"])
            )

    async def role_ready(self, role: str) -> bool:
        """Whether the login role may switch to ``role`` on PostgreSQL (it exists and we are a member or superuser)."""
        async with self.engine.connect() as connection:
            found = await connection.execute(
                text(
                    "SELECT pg_has_role(current_user, oid, 'MEMBER') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
                    "FROM pg_roles WHERE rolname = :role"
                ),
                {"role": role},
            )
            return bool(found.scalar())

    async def write_batch(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(connection)`` (a synchronous SQLAlchemy Core connection) in a system write transaction; return its result.

        For background writers of several statements (the outbox relay). On a SQLite file the
        statements run back to back (:class:`~._engine.SqliteWriter`): SQLite's one write lock is held
        for the statements alone, not also for the requests the event loop serves between two of them.
        Elsewhere ``work`` runs in ``session(system=True, write_lock=True)``. Errors map to 503s as
        ``session`` maps them.
        """
        if self._writer is None:
            async with self.session(system=True, write_lock=True) as session:
                return await session.run_sync(lambda sync: work(sync.connection()))
        try:
            return await self._writer.run(work)
        except Exception as error:
            mapped = self._unavailable(error)
            if mapped is error:
                raise
            raise mapped from error

    def _unavailable(self, error: Exception) -> Exception:
        """The 503 ``error`` means (counted) when the database cannot serve, else ``error`` itself."""
        reason = reason_of(error)
        if reason is None:
            return error
        self.stats.count(reason)
        return unavailable(reason, self.retry_after)

    async def dispose(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.dispose)
        await self.engine.dispose()
        if self.system_engine is not None:
            await self.system_engine.dispose()
