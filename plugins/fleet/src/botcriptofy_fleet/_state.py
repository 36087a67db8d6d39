"""The plugin's state: each generation's store (in its stash) and the latest one (for the metrics)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botcriptofy import HealthCheck, StashKey

from ._settings import FleetSettings, host_name, resolve_dsn
from ._store import PostgresConfigStore

if TYPE_CHECKING:
    from botcriptofy import Kernel


@dataclass
class FleetState:
    """Shared by every generation of one runtime: the store opened last (the metrics read it)."""

    store: PostgresConfigStore | None = None


STATE: StashKey[FleetState] = StashKey("fleet.state")
# The store of one generation: a restarted plugin opens a new one in the new generation, and the old
# generation's shutdown closes only its own.
STORE: StashKey[PostgresConfigStore] = StashKey("fleet.store")


def state(kernel: Kernel) -> FleetState:
    return kernel.stash.setdefault(STATE, FleetState())


def store_of(kernel: Kernel) -> PostgresConfigStore | None:
    return kernel.stash.get(STORE, None)


async def open_store(kernel: Kernel, settings: FleetSettings, all_settings: dict[str, Any]) -> None:
    if STORE in kernel.stash:
        del kernel.stash[STORE]  # copied from the generation this one replaces; that one closes it
    store = None
    if settings.enabled:
        store = PostgresConfigStore(
            resolve_dsn(settings, all_settings),
            host=host_name(settings),
            reconcile_interval=settings.reconcile_interval,
            heartbeat_timeout=settings.heartbeat_timeout,
        )
        await store.open()
        kernel.stash[STORE] = store
    state(kernel).store = store


async def close_store(kernel: Kernel) -> None:
    store = store_of(kernel)
    if store is None:
        return
    holder = state(kernel)
    if holder.store is store:
        holder.store = None
    await store.close()


def reconfigure(kernel: Kernel, settings: FleetSettings) -> None:
    store = store_of(kernel)
    if store is not None:
        store.reconcile_interval = settings.reconcile_interval
        store.heartbeat_timeout = settings.heartbeat_timeout


def health_checks(kernel: Kernel) -> list[HealthCheck]:
    store = store_of(kernel)
    if store is None:
        return []

    def listening() -> None:
        if not store.listening:
            since = f" for {time.time() - store.disconnected_since:.0f} s" if store.disconnected_since else ""
            raise RuntimeError(
                f"the fleet's configuration store is unreachable{since}: this host would miss configuration changes (reconnecting)"
            )
        if not store.synced:
            raise RuntimeError("connected to the fleet's configuration store; applying its current version")

    return [HealthCheck("config_store", listening)]
