"""BotCriptoFy fleet plugin: hook implementations only; the logic lives in the private modules.

With ``[fleet] enabled = true`` and PostgreSQL, the plugin provides the kernel's ``config_store``:
the configuration of every host is the current version stored in the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botcriptofy import HealthCheck, SettingsSchema, hookimpl

from ._cli import register
from ._metrics import FleetCollector
from ._settings import LIVE_KEYS, FleetSettings
from ._state import close_store, open_store, reconfigure, state, store_of
from ._state import health_checks as store_health_checks
from ._store import PostgresConfigStore

if TYPE_CHECKING:
    import click

    from botcriptofy import ConfigStore, Kernel

__all__ = [
    "FleetSettings",
    "PostgresConfigStore",
    "config_store",
    "health_checks",
    "plugin_settings_schema",
    "register_commands",
    "register_metrics",
    "settings_changed",
    "shutdown",
    "startup",
]


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SettingsSchema(FleetSettings, live=LIVE_KEYS, guarded=frozenset({"database_url"}))


@hookimpl
async def startup(kernel: Kernel) -> None:
    """Open the store when fleet mode is on (a URL that is not PostgreSQL refuses the plugin, naming the key)."""
    await open_store(kernel, kernel.settings_for("fleet"), kernel.settings)


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    await close_store(kernel)


@hookimpl
def settings_changed(kernel: Kernel, previous: Any, current: Any, changed: frozenset[str]) -> None:
    reconfigure(kernel, current)


@hookimpl
def config_store(kernel: Kernel) -> ConfigStore | None:
    return store_of(kernel)


@hookimpl
def health_checks(kernel: Kernel) -> list[HealthCheck]:
    return store_health_checks(kernel)


@hookimpl
def register_metrics(kernel: Kernel) -> list[Any]:
    return [FleetCollector(state(kernel))]


@hookimpl
def register_commands(cli: click.Group) -> None:
    register(cli)
