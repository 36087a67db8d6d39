"""What the plugin keeps while it runs, and how it starts, reconfigures and stops."""

from __future__ import annotations

import asyncio
import logging
import random
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from botcriptofy import StashKey

from ._database import Database
from ._engine import create_engine, sqlite_writer
from ._migrate import Revisions, collect, current_all, upgrade_all
from ._outbox import Outbox
from ._relay import Relay
from ._rls import PRIVILEGED_LOGIN, can_switch_to, declared_tenant_columns, derive_key, role_exists, tenant_tables
from ._settings import StorageSettings, effective_url, separate_url
from ._unavailable import stats_for

if TYPE_CHECKING:
    from botcriptofy import Kernel

log = logging.getLogger("botcriptofy.storage")

PLUGIN = "storage"
# Set by the `botcriptofy db ...` commands: they start the kernel without upgrading on the way and without a relay.
maintenance: ContextVar[bool] = ContextVar("botcriptofy_storage_maintenance", default=False)


@dataclass(eq=False)
class StorageState:
    settings: StorageSettings
    database: Database
    relay: Relay
    outbox: Outbox
    migrated: set[tuple[str, str]] = field(default_factory=set)
    schema_ok: frozenset[tuple[str, str]] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def migrate(self, kernel: Kernel, *, only_new: bool = True) -> list[Revisions]:
        """Upgrade every enabled plugin's migrations (only those not upgraded yet by this process, unless ``only_new`` is False).

        Runs on ``migrations_url`` when it names another login (the tables' owner), else on the service's own
        connection. Plugins already at head, and tables already secured, are only read: no DDL, no lock.
        """
        async with self.lock:
            every = await collect(kernel)
            declared = declared_tenant_columns(plan.metadata for plan in every)
            self.database.declared_tenant_columns = declared
            plans = [plan for plan in every if plan.key not in self.migrated] if only_new else every
            if not plans:
                return []
            engine, separate = self._migrations_engine()
            try:
                async with engine.connect() as connection:
                    results = await connection.run_sync(
                        upgrade_all,
                        plans,
                        rls_role=self.settings.rls_role,
                        declared=declared,
                        manage_role=not separate,
                        key=tenant_key(self.settings),
                    )
            finally:
                if separate:
                    await engine.dispose()
            self.migrated.update(plan.key for plan in plans)
            self.schema_ok = None
            await self.resolve_role()
        for result in results:
            if result.before != result.current:
                log.info("migrated plugin %s: %s -> %s", result.plugin, ", ".join(result.before) or "(empty)", ", ".join(result.current))
        return results

    def _migrations_engine(self) -> tuple[AsyncEngine, bool]:
        url = separate_url(self.settings.migrations_url, self.database.engine.url)
        if url is None:
            return self.database.engine, False
        return create_engine(url, self.settings.model_copy(update={"pool_size": 1, "max_overflow": 0})), True

    async def resolve_role(self) -> None:
        """Switch tenant sessions to ``rls_role`` only where it changes something: it exists, is not the login, and may be used."""
        role = self.settings.rls_role
        if self.database.dialect != "postgresql" or not role:
            self.database.rls_role = ""
            return
        async with self.database.engine.connect() as connection:
            current = (await connection.execute(text("SELECT current_user"))).scalar()
            ready = role != current and await connection.run_sync(lambda sync: role_exists(sync, role) and can_switch_to(sync, role))
            privileged = (await connection.execute(text(PRIVILEGED_LOGIN))).scalar()
        self.database.rls_role = role if ready else ""
        if not ready and role != current and privileged:
            log.warning(
                "tenant sessions keep the login role %s, which bypasses row-level security: PostgreSQL role %s does not exist "
                "or cannot be used yet -- run `botcriptofy db upgrade` (development) or connect as the service role "
                "(`botcriptofy db create-roles`)",
                current,
                role,
            )

    async def revisions(self, kernel: Kernel) -> list[Revisions]:
        plans = await collect(kernel)
        async with self.database.engine.connect() as connection:
            return await connection.run_sync(current_all, plans)

    async def schema_problems(self, kernel: Kernel) -> list[str]:
        """What the database lacks for the enabled plugins: pending migrations, tenant tables without row-level security."""
        plans = await collect(kernel)
        keys = frozenset(plan.key for plan in plans)
        if self.schema_ok == keys:
            return []
        declared = declared_tenant_columns(plan.metadata for plan in plans)
        async with self.database.engine.connect() as connection:
            revisions = await connection.run_sync(current_all, plans)
            open_tables = []
            if self.database.dialect == "postgresql":
                signed = tenant_key(self.settings) is not None
                open_tables = await connection.run_sync(lambda sync: [t for t in tenant_tables(sync, declared) if not t.current(signed)])
        problems = [
            f"plugin {r.plugin} is at {', '.join(r.current) or '(empty)'}, not at head {', '.join(r.heads)}"
            for r in revisions
            if not r.up_to_date
        ]
        problems += [
            f"tenant table {table.name} has no row-level security policy on {table.column}"
            if not table.secured
            else f"the policy of tenant table {table.name} does not match storage.rls_secret (set or unset since the last upgrade)"
            for table in open_tables
        ]
        if not problems:
            self.schema_ok = keys
        return problems

    async def check_schema(self, kernel: Kernel) -> bool:
        """The ``storage.schema`` readiness check: fails naming what is missing and the command that fixes it."""
        problems = await self.schema_problems(kernel)
        if problems:
            raise RuntimeError("; ".join(problems) + " -- run `botcriptofy db upgrade`")
        return True

    def database_for(self, kernel: Kernel) -> Database:
        """The database as ``kernel`` sees it: its first session first upgrades plugins enabled since start-up."""
        checked = False

        async def before_session() -> None:
            nonlocal checked
            if checked:
                return
            if self.settings.auto_upgrade and not maintenance.get():
                await self.migrate(kernel)
            checked = True

        return self.database.bound(before_session)


def tenant_key(settings: StorageSettings) -> bytes | None:
    secret = settings.rls_secret.get_secret_value()
    return derive_key(secret) if secret else None


STATE: StashKey[StorageState] = StashKey("botcriptofy_storage.state")


def settings_of(kernel: Kernel) -> StorageSettings:
    settings = kernel.settings_for(PLUGIN)
    return settings if isinstance(settings, StorageSettings) else StorageSettings()


async def _ping(database: Database) -> None:
    """Check the database answers; on SQLite, wait out another worker that holds the file's lock while it starts.

    Workers starting together race to switch a new SQLite file to WAL and to upgrade it; SQLite answers
    "database is locked" at once to the loser of the journal-mode switch (its busy handler does not cover
    it), so a few short retries separate a busy file from an unreachable one.
    """
    for attempt in range(100):
        try:
            await database.ping()
            return
        except Exception as error:
            if database.dialect == "sqlite" and "locked" in str(error) and attempt < 99:
                await asyncio.sleep(0.02 + random.random() * 0.05)
                continue
            raise ConnectionError(f"cannot reach the database {database!r}: {error}; check storage.url and that the server runs") from error


async def start(kernel: Kernel) -> StorageState:
    settings = settings_of(kernel)
    url = effective_url(settings, kernel.state_dir)
    system_url = separate_url(settings.system_url, url)
    engine = create_engine(url, settings)
    system_engine = create_engine(system_url, settings) if system_url is not None else None
    database = Database(
        engine,
        rls_role=settings.rls_role,
        system_engine=system_engine,
        stats=stats_for(kernel.runtime),
        retry_after=settings.retry_after,
        tenant_key=tenant_key(settings),
        writer=sqlite_writer(engine, settings),
    )
    relay = Relay(database, kernel, settings)
    state = StorageState(settings, database, relay, Outbox(database, relay.wake))
    try:
        await _ping(database)
        # Start-up changes the schema only when auto_upgrade is on and something is pending; otherwise it only reads
        # (the storage.schema readiness check names what is missing).
        if settings.auto_upgrade and not maintenance.get():
            await state.migrate(kernel)
        else:
            await state.resolve_role()
    except BaseException:
        await database.dispose()
        raise
    kernel.stash[STATE] = state
    if settings.relay_enabled and not maintenance.get():
        relay.start()
    log.info("storage started on %s (%s)", database, database.dialect)
    return state


async def reconfigure(kernel: Kernel, current: StorageSettings, changed: frozenset[str]) -> None:
    state = kernel.stash[STATE]
    state.settings = current
    state.relay.settings = current
    state.database.retry_after = current.retry_after
    if "echo" in changed:
        state.database.engine.sync_engine.echo = current.echo
    if "relay_enabled" in changed and not maintenance.get():
        if current.relay_enabled:
            state.relay.start()
        else:
            await state.relay.stop()


async def stop(kernel: Kernel) -> None:
    state = kernel.stash.get(STATE, None)
    if state is None:
        return
    await state.relay.stop()
    await state.database.dispose()
