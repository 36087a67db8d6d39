"""What the plugin keeps while it runs, and how it starts, reconfigures and stops."""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botcriptofy import StashKey

from ._database import Database
from ._engine import create_engine
from ._migrate import Revisions, collect, current_all, upgrade_all
from ._outbox import Outbox
from ._relay import Relay
from ._settings import StorageSettings, effective_url

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
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def migrate(self, kernel: Kernel, *, only_new: bool = True) -> list[Revisions]:
        """Upgrade every enabled plugin's migrations (only those not upgraded yet by this process, unless ``only_new`` is False)."""
        async with self.lock:
            plans = await collect(kernel)
            if only_new:
                plans = [plan for plan in plans if plan.key not in self.migrated]
            if not plans:
                return []
            async with self.database.engine.connect() as connection:
                results = await connection.run_sync(upgrade_all, plans, rls_role=self.settings.rls_role)
            self.migrated.update(plan.key for plan in plans)
            self.database.rls_role = self.settings.rls_role
        for result in results:
            if result.before != result.current:
                log.info("migrated plugin %s: %s -> %s", result.plugin, ", ".join(result.before) or "(empty)", ", ".join(result.current))
        return results

    async def revisions(self, kernel: Kernel) -> list[Revisions]:
        plans = await collect(kernel)
        async with self.database.engine.connect() as connection:
            return await connection.run_sync(current_all, plans)

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


STATE: StashKey[StorageState] = StashKey("botcriptofy_storage.state")


def settings_of(kernel: Kernel) -> StorageSettings:
    settings = kernel.settings_for(PLUGIN)
    return settings if isinstance(settings, StorageSettings) else StorageSettings()


async def start(kernel: Kernel) -> StorageState:
    settings = settings_of(kernel)
    url = effective_url(settings, kernel.state_dir)
    engine = create_engine(url, settings)
    database = Database(engine, rls_role=settings.rls_role)
    relay = Relay(database, kernel, settings)
    state = StorageState(settings, database, relay, Outbox(database, relay.wake))
    try:
        try:
            await database.ping()
        except Exception as error:
            raise ConnectionError(f"cannot reach the database {database!r}: {error}; check storage.url and that the server runs") from error
        if settings.auto_upgrade and not maintenance.get():
            await state.migrate(kernel)
        elif database.dialect == "postgresql" and settings.rls_role and not await database.role_ready(settings.rls_role):
            log.warning("PostgreSQL role %s does not exist yet: sessions keep the login role (superusers bypass row-level security) "
                        "until `botcriptofy db upgrade` creates it", settings.rls_role)
            database.rls_role = ""
    except BaseException:
        await engine.dispose()
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
