"""BotCriptoFy notifications plugin: addressing, preferences, in-app inbox, delivery log, retries, digests, templates.

It also serves the staff command registry over HTTP (``/v1/staff/commands``) with the built-in
commands ``/whoami``, ``/help``, ``/health``, ``/plugins`` and ``/config``. Hook implementations
only; the logic lives in the private modules. See docs/notifications.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute

from botcriptofy import (
    DataSubject,
    EventHandler,
    Kernel,
    Migrations,
    NotificationRequested,
    Permission,
    SettingsSchema,
    StaffCommand,
    hookimpl,
)

from ._settings import SCHEMA, NotificationsSettings

__all__ = [
    "NotificationsSettings",
    "erase_subject_data",
    "export_subject_data",
    "plugin_settings_schema",
    "register_event_handlers",
    "register_migrations",
    "register_permissions",
    "register_routes",
    "register_staff_commands",
    "shutdown",
    "startup",
]

MIGRATIONS = Path(__file__).parent / "migrations"


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SCHEMA


@hookimpl
def startup(kernel: Kernel) -> None:
    from ._dispatcher import Dispatcher
    from ._state import STATE, NotificationsState
    from ._templates import Templates

    state = NotificationsState(templates=Templates())
    kernel.stash[STATE] = state
    state.dispatcher = Dispatcher(kernel)
    state.dispatcher.start()


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    from ._state import STATE

    state = kernel.stash.get(STATE, None)
    if state is not None and state.dispatcher is not None:
        await state.dispatcher.stop()
        state.dispatcher = None


@hookimpl
def register_migrations(kernel: Kernel) -> Migrations:
    from ._models import metadata

    return Migrations(directory=MIGRATIONS, metadata=metadata)


@hookimpl
def register_event_handlers(kernel: Kernel) -> list[EventHandler]:
    from ._producers import handlers
    from ._router import route

    async def routed(envelope: object) -> None:
        await route(kernel, envelope)  # type: ignore[arg-type]

    return [EventHandler("notifications.router", routed, events=(NotificationRequested,)), *handlers(kernel)]


@hookimpl
def register_routes(kernel: Kernel) -> list[BaseRoute]:
    from ._routes import routes

    return routes()


@hookimpl
def register_staff_commands(kernel: Kernel) -> list[StaffCommand]:
    from ._commands import COMMANDS

    return list(COMMANDS)


@hookimpl
def register_permissions(kernel: Kernel) -> list[Permission]:
    return [
        Permission("configuration:notifications", "List the delivery log and retry dead letters.", frozenset({"configuration:manager"})),
    ]


@hookimpl
async def export_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import export

    return await export(kernel, subject)


@hookimpl
async def erase_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import erase

    return await erase(kernel, subject)
