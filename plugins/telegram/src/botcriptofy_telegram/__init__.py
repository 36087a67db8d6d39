"""BotCriptoFy Telegram plugin: the staff bot (aiogram 3).

Linking with single-use codes, deny by default, department chats, staff commands with per-person
command menus, approvals with inline keyboards, a sender within Telegram's limits, polling under a
lease or webhook mode. Hook implementations only; the logic lives in the private modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute

from botcriptofy import (
    ApprovalRequest,
    DataSubject,
    Kernel,
    Migrations,
    NotificationChannel,
    PluginError,
    SettingsSchema,
    StaffCommand,
    hookimpl,
)

from ._settings import SCHEMA, TelegramSettings

__all__ = [
    "TelegramSettings",
    "erase_subject_data",
    "export_subject_data",
    "notification_channels",
    "plugin_settings_schema",
    "present_approval",
    "register_migrations",
    "register_routes",
    "register_staff_commands",
    "shutdown",
    "startup",
]

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("botcriptofy.telegram")


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SCHEMA


@hookimpl
async def startup(kernel: Kernel) -> None:
    from ._sender import Sender
    from ._state import STATE, TelegramState, settings_of

    settings = settings_of(kernel)
    if settings.mode == "webhook" and not settings.webhook_secret:
        raise PluginError(
            "telegram",
            "webhook mode needs telegram.webhook_secret.",
            hook="startup",
            fix="set BOTCRIPTOFY_TELEGRAM__WEBHOOK_SECRET to a random string of letters, digits, '_' and '-'.",
        )
    bot = dispatcher = None
    if settings.bot_token and settings.mode != "off":
        from ._bot import build

        bot, dispatcher = build(kernel, settings.bot_token, settings.api_base)
    else:  # aiogram is not even imported: its models take about 150 MB of every worker
        log.warning("telegram.bot_token is empty or telegram.mode is 'off': the staff bot stays off")
    sender = Sender(
        per_second=settings.per_second,
        private_interval=settings.private_interval,
        group_per_minute=settings.group_per_minute,
        max_retries=settings.max_retries,
    )
    worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    state = TelegramState(bot=bot, dispatcher=dispatcher, sender=sender, worker=worker)
    kernel.stash[STATE] = state
    if bot is None:
        return
    if settings.mode == "webhook" and settings.webhook_url:
        await bot.set_webhook(url=settings.webhook_url, secret_token=settings.webhook_secret, allowed_updates=["message", "callback_query"])
    from ._bot import menu_loop, poll_loop

    if settings.mode == "polling":
        state.tasks.add(asyncio.create_task(poll_loop(kernel), name=f"botcriptofy-telegram-poller-{worker}"))
    state.tasks.add(asyncio.create_task(menu_loop(kernel), name=f"botcriptofy-telegram-menus-{worker}"))


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    from . import _store as store
    from ._state import POLLER, STATE

    state = kernel.stash.get(STATE, None)
    if state is None:
        return
    for task in list(state.tasks):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    state.tasks.clear()
    if state.polling:
        with contextlib.suppress(Exception):
            await store.release(kernel, POLLER, state.worker)
    if state.bot is not None:
        await state.bot.session.close()


@hookimpl
def register_migrations(kernel: Kernel) -> Migrations:
    from ._models import metadata

    return Migrations(directory=MIGRATIONS, metadata=metadata)


@hookimpl
def register_routes(kernel: Kernel) -> list[BaseRoute]:
    from ._routes import routes

    return routes()


@hookimpl
def notification_channels(kernel: Kernel) -> list[NotificationChannel]:
    from ._channel import TelegramChannel

    return [TelegramChannel(kernel)]


@hookimpl
async def present_approval(kernel: Kernel, approval: ApprovalRequest) -> None:
    from ._state import STATE

    state = kernel.stash.get(STATE, None)
    if state is None or state.bot is None:
        return  # the bot is off
    from ._bot import present

    await present(kernel, approval)


@hookimpl
def register_staff_commands(kernel: Kernel) -> list[StaffCommand]:
    from ._routes import unlink_command

    return [StaffCommand("unlink", {"pt-BR": "Desvincular minha conta do Telegram", "en": "Unlink my Telegram account"}, unlink_command)]


@hookimpl
async def export_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import export

    return await export(kernel, subject)


@hookimpl
async def erase_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import erase

    return await erase(kernel, subject)
