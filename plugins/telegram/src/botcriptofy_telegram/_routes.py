"""HTTP: link and unlink the caller's Telegram account; the webhook that Telegram calls in webhook mode."""

from __future__ import annotations

import hmac
import json
from datetime import datetime

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.routing import BaseRoute

from botcriptofy import CommandContext, CommandReply, ProblemError, Route, kernel_of, read_body, require

from . import _store as store
from ._state import settings_of, state_of

SECRET_HEADER = "x-telegram-bot-api-secret-token"


class LinkOut(BaseModel):
    code: str
    expires_at: datetime
    command: str
    deep_link: str | None


class UnlinkOut(BaseModel):
    unlinked: bool


async def create_link(request: Request) -> LinkOut:
    """A single-use code (valid telegram.link_code_ttl seconds): send `/start <code>` to the bot in a private chat."""
    actor = await require(request)
    if actor.kind != "user":
        raise ProblemError(403, "Forbidden", "Only people link a Telegram account; API keys and service principals cannot.")
    kernel = kernel_of(request)
    settings = settings_of(kernel)
    code, expires = await store.new_link_code(kernel, actor.id, settings.link_code_ttl)
    link = f"https://t.me/{settings.bot_username}?start={code}" if settings.bot_username else None
    return LinkOut(code=code, expires_at=expires, command=f"/start {code}", deep_link=link)


async def delete_link(request: Request) -> UnlinkOut:
    """Unlink the caller's Telegram account."""
    actor = await require(request)
    kernel = kernel_of(request)
    unlinked = await store.unlink(kernel, actor.id)
    state_of(kernel).menu = None
    return UnlinkOut(unlinked=unlinked)


async def webhook(request: Request) -> dict[str, bool]:
    """Telegram's updates in webhook mode; the secret token header is checked in constant time."""
    kernel = kernel_of(request)
    settings = settings_of(kernel)
    given = request.headers.get(SECRET_HEADER, "")
    if (
        settings.mode != "webhook"
        or not settings.webhook_secret
        or not hmac.compare_digest(given.encode(), settings.webhook_secret.encode())
    ):
        raise ProblemError(401, "Unauthorized", "Missing or wrong X-Telegram-Bot-Api-Secret-Token.")
    raw = await read_body(request, 1024 * 1024)
    from aiogram.types import Update

    from ._bot import feed

    try:
        update = Update.model_validate(json.loads(raw or b"null"))
    except (ValueError, ValidationError):
        raise ProblemError(400, "Malformed update", "The body is not a Telegram Update object.") from None
    if state_of(kernel).bot is None:
        raise ProblemError(503, "Bot off", "telegram.bot_token is not set.")
    await feed(kernel, update)
    return {"ok": True}


async def unlink_command(context: CommandContext) -> CommandReply:
    unlinked = await store.unlink(context.kernel, context.actor.id)
    state_of(context.kernel).menu = None
    if context.locale == "en":
        return CommandReply("Telegram account unlinked." if unlinked else "No Telegram account was linked.")
    return CommandReply("Conta do Telegram desvinculada." if unlinked else "Nenhuma conta do Telegram estava vinculada.")


def routes() -> list[BaseRoute]:
    tags = ["telegram"]
    return [
        Route(
            "/v1/me/telegram/link",
            create_link,
            methods=["POST"],
            response=LinkOut,
            authenticated=True,
            tags=tags,
            status_code=201,
            responses={401: "Unauthorized", 403: "Forbidden"},
        ),
        Route(
            "/v1/me/telegram/link",
            delete_link,
            methods=["DELETE"],
            response=UnlinkOut,
            authenticated=True,
            tags=tags,
            name="delete_telegram_link",
            responses={401: "Unauthorized"},
        ),
        Route("/v1/telegram/webhook", webhook, methods=["POST"], response=dict[str, bool], tags=tags, include_in_schema=False),
    ]
