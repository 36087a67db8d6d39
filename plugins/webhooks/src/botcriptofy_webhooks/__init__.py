"""BotCriptoFy webhooks plugin: traders' outbound webhooks (Standard Webhooks), retries, SSRF guard.

Hook implementations only; the logic lives in the private modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute

from botcriptofy import DataSubject, Envelope, EventHandler, Kernel, Migrations, SettingsSchema, StashKey, hookimpl

from ._settings import SCHEMA, WebhooksSettings

__all__ = [
    "WebhooksSettings",
    "erase_subject_data",
    "export_subject_data",
    "plugin_settings_schema",
    "register_event_handlers",
    "register_metrics",
    "register_migrations",
    "register_routes",
    "shutdown",
    "startup",
]

MIGRATIONS = Path(__file__).parent / "migrations"
SENDER: StashKey[object] = StashKey("webhooks.sender")


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SCHEMA


@hookimpl
def startup(kernel: Kernel) -> None:
    from ._sender import Sender

    sender = Sender(kernel)
    sender.start()
    kernel.stash[SENDER] = sender


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    sender = kernel.stash.get(SENDER, None)
    if sender is not None:
        await sender.stop()  # type: ignore[attr-defined]


@hookimpl
def register_metrics(kernel: Kernel) -> list[Any]:
    from ._sender import deliveries_counter

    return [deliveries_counter(kernel)]


@hookimpl
def register_migrations(kernel: Kernel) -> Migrations:
    from ._models import metadata

    return Migrations(directory=MIGRATIONS, metadata=metadata)


@hookimpl
def register_routes(kernel: Kernel) -> list[BaseRoute]:
    from ._routes import routes

    return routes()


@hookimpl
def register_event_handlers(kernel: Kernel) -> list[EventHandler]:
    from ._sender import fan_out

    async def handle(envelope: Envelope) -> None:
        await fan_out(kernel, envelope)
        sender = kernel.current().stash.get(SENDER, None)
        if sender is not None:
            sender.wakeup.set()  # type: ignore[attr-defined]

    return [EventHandler("webhooks.fan_out", handle, events=("*",))]


@hookimpl
async def export_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import export

    return await export(kernel, subject)


@hookimpl
async def erase_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import erase

    return await erase(kernel, subject)
