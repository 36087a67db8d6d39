"""BotCriptoFy storage plugin: the database, tenant scoping, per-plugin migrations and the transactional outbox.

Other plugins reach it only through the kernel: ``kernel.database()`` (sessions, engine,
``ensure_time_series``), ``kernel.events.publish(..., session=...)`` (the outbox), and their own
``register_migrations`` hook. See docs/storage.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from botcriptofy import DataSubject, HealthCheck, Migrations, SettingsSchema, hookimpl

from . import _cli, _state
from ._database import Database
from ._idempotency import IdempotencyStore
from ._outbox import Outbox, metadata
from ._settings import SCHEMA, StorageSettings
from ._tenancy import TenantScopeError
from ._unavailable import UnavailableCollector, stats_for

if TYPE_CHECKING:
    import click

    from botcriptofy import Kernel

__all__ = ["Database", "Outbox", "StorageSettings", "TenantScopeError", "__version__"]
__version__ = "0.4.0"

MIGRATIONS = Path(__file__).parent / "migrations"


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SCHEMA


@hookimpl(tryfirst=True)
async def startup(kernel: Kernel) -> None:
    """Start before other plugins, so their start-up finds the database and their tables."""
    await _state.start(kernel)


@hookimpl(tryfirst=True)
async def shutdown(kernel: Kernel) -> None:
    """Stop after other plugins (the kernel stops plugins in reverse start-up order)."""
    await _state.stop(kernel)


@hookimpl
async def settings_changed(kernel: Kernel, previous: Any, current: StorageSettings, changed: frozenset[str]) -> None:
    await _state.reconfigure(kernel, current, changed)


@hookimpl
def database(kernel: Kernel) -> Database | None:
    state = kernel.stash.get(_state.STATE, None)
    return state.database_for(kernel) if state is not None else None


@hookimpl
def event_outbox(kernel: Kernel) -> Outbox | None:
    state = kernel.stash.get(_state.STATE, None)
    return state.outbox if state is not None else None


@hookimpl
def idempotency_store(kernel: Kernel) -> IdempotencyStore | None:
    state = kernel.stash.get(_state.STATE, None)
    return IdempotencyStore(state.database_for(kernel)) if state is not None else None


@hookimpl
def register_migrations(kernel: Kernel) -> Migrations:
    return Migrations(directory=MIGRATIONS, metadata=metadata)


@hookimpl
def health_checks(kernel: Kernel) -> list[HealthCheck]:
    state = kernel.stash.get(_state.STATE, None)
    if state is None:
        return []
    return [HealthCheck("database", state.database.ping), HealthCheck("schema", lambda: state.check_schema(kernel))]


@hookimpl
def register_metrics(kernel: Kernel) -> list[Any]:
    return [UnavailableCollector(stats_for(kernel.runtime))]


@hookimpl
def register_commands(cli: click.Group) -> None:
    _cli.register(cli)


@hookimpl
def export_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import export

    return export(kernel, subject)


@hookimpl
async def erase_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import erase

    return await erase(kernel, subject)
