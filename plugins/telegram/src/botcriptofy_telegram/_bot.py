"""The staff bot: who is talking (linked numeric Telegram ids only), commands, approvals, polling.

Deny by default: a message or button press from a Telegram account that is not linked to an active
staff account gets one neutral reply per ``refusal_window`` and runs nothing; each refusal is a
security event (``telegram.access_refused``), itself limited to one per window and person.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import time
from datetime import UTC, datetime
from typing import Any

from aiogram import Bot, Dispatcher, Router
from aiogram.exceptions import TelegramConflictError, TelegramNetworkError
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeChat,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)

from botcriptofy import Actor, ApprovalRequest, Event, Kernel, NotificationAction, ProblemError, Recipient, RoundErrors

from . import _store as store
from ._state import POLLER, settings_of, state_of

log = logging.getLogger("botcriptofy.telegram")


TEXT = {
    "pt-BR": {
        "refused": "Não autorizado.",
        "linked": "Conta vinculada a {name}. Envie /help para ver seus comandos.",
        "bad_code": "Código inválido ou expirado. Gere outro em POST /v1/me/telegram/link.",
        "forbidden": "Sem permissão para /{name}.",
        "unknown": "Comando desconhecido: /{name}. Envie /help.",
        "usage": "Uso: {usage}",
        "failed": "O comando falhou; tente de novo em instantes.",
        "approve": "✅ Aprovar",
        "reject": "❌ Rejeitar",
        "confirm": "⚠️ Confirmar aprovação",
        "cancel": "Cancelar",
        "confirm_prompt": "Ação destrutiva: confirme.",
        "gone": "Botão inválido.",
        "not_pending": "Este pedido já está {status}.",
        "not_allowed": "Você não tem permissão para decidir este pedido.",
        "approved": "aprovado",
        "rejected": "rejeitado",
        "expired": "expirado",
        "pending": "pendente",
        "request": "🔐 <b>Aprovação</b> ({department})\n{summary}\nAção: <code>{action}</code>\nExpira: {expires}",
        "outcome": "\n\n<b>{status}</b> por {who} em {when}",
        "outcome_expired": "\n\n<b>Expirado</b> em {when}",
        "done": "Feito: {status}.",
    },
    "en": {
        "refused": "Not authorised.",
        "linked": "Account linked to {name}. Send /help to see your commands.",
        "bad_code": "Invalid or expired code. Create another with POST /v1/me/telegram/link.",
        "forbidden": "You may not run /{name}.",
        "unknown": "Unknown command: /{name}. Send /help.",
        "usage": "Usage: {usage}",
        "failed": "The command failed; try again shortly.",
        "approve": "✅ Approve",
        "reject": "❌ Reject",
        "confirm": "⚠️ Confirm approval",
        "cancel": "Cancel",
        "confirm_prompt": "Destructive action: confirm.",
        "gone": "Invalid button.",
        "not_pending": "This request is already {status}.",
        "not_allowed": "You may not decide this request.",
        "approved": "approved",
        "rejected": "rejected",
        "expired": "expired",
        "pending": "pending",
        "request": "🔐 <b>Approval</b> ({department})\n{summary}\nAction: <code>{action}</code>\nExpires: {expires}",
        "outcome": "\n\n<b>{status}</b> by {who} at {when}",
        "outcome_expired": "\n\n<b>Expired</b> at {when}",
        "done": "Done: {status}.",
    },
}


def t(locale: str, key: str, **values: Any) -> str:
    return TEXT.get(locale, TEXT["pt-BR"])[key].format(**values)


class AccessRefused(Event):
    """Someone the bot does not know (or no longer trusts) wrote to it or pressed a button."""

    event_type = "telegram.access_refused"

    telegram_user_id: int
    chat_id: int | None
    reason: str  # "unknown", "disabled", "bad_code"


def locale_of(language_code: str | None) -> str:
    return "en" if language_code and language_code.lower().startswith("en") else "pt-BR"


# -- who is talking -------------------------------------------------------------------------


async def staff_member(kernel: Kernel, telegram_user_id: int) -> Recipient | None:
    """The active account linked to this numeric Telegram id, with its current permissions (None: refuse)."""
    user_id = await store.user_of(kernel, telegram_user_id)
    if user_id is None:
        return None
    found = await kernel.resolve_recipients(f"user:{user_id}")
    return found[0] if found and found[0].actor is not None else None


async def refuse(kernel: Kernel, telegram_user_id: int, chat_id: int | None, reason: str) -> bool:
    """Record a refusal; return whether to answer it (once per refusal window and person)."""
    state, settings = state_of(kernel), settings_of(kernel)
    now = time.monotonic()
    last = state.refused.get(telegram_user_id)
    if last is not None and now - last < settings.refusal_window:
        return False
    state.refused[telegram_user_id] = now
    for stale in [k for k, v in state.refused.items() if now - v >= settings.refusal_window]:
        del state.refused[stale]
    try:
        await kernel.events.publish(AccessRefused(telegram_user_id=telegram_user_id, chat_id=chat_id, reason=reason))
    except Exception:
        log.exception("could not publish telegram.access_refused")
    return True


# -- replies --------------------------------------------------------------------------------


def keyboard(buttons: tuple[NotificationAction, ...] | list[NotificationAction]) -> InlineKeyboardMarkup | None:
    rows = []
    for button in buttons:
        if button.url:
            rows.append([InlineKeyboardButton(text=button.label, url=button.url)])
        elif button.callback:
            rows.append([InlineKeyboardButton(text=button.label, callback_data=button.callback)])
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


async def send(
    kernel: Kernel, chat_id: int, text: str, *, topic_id: int | None = None, markup: InlineKeyboardMarkup | None = None
) -> list[Any]:
    state = state_of(kernel)
    bot = state.bot
    assert bot is not None

    async def one(part: str) -> Any:
        return await bot.send_message(chat_id=chat_id, text=part, message_thread_id=topic_id, reply_markup=markup)

    return await state.sender.to_chat(chat_id, one, text)


def parse_arguments(command: Any, words: list[str]) -> dict[str, Any]:
    """``/cmd a b key=value``: positional words fill the model's fields in order; ``key=value`` names one."""
    fields = list(command.arguments.model_fields) if command.arguments is not None else []
    values: dict[str, Any] = {}
    position = 0
    for word in words:
        key, eq, value = word.partition("=")
        if eq and key in fields:
            values[key] = value
            continue
        while position < len(fields) and fields[position] in values:
            position += 1
        values[fields[position] if position < len(fields) else f"argument{position + 1}"] = word
        position += 1
    return values


# -- messages -------------------------------------------------------------------------------


async def on_message(kernel: Kernel, message: Message) -> None:
    kernel = kernel.current()
    sender = message.from_user
    if sender is None or sender.is_bot or not message.text:
        return
    locale = locale_of(sender.language_code)
    text = message.text.strip()
    if text.startswith("/start"):
        code = text.partition(" ")[2].strip()
        if message.chat.type == "private" and code:
            user_id = await store.redeem(kernel, code, sender.id, message.chat.id)
            if user_id is not None:
                person = await kernel.resolve_recipients(f"user:{user_id}")
                if person:
                    await send(kernel, message.chat.id, t(locale, "linked", name=html.escape(person[0].name)))
                    state_of(kernel).menu = None  # the new chat gets its own command menu
                    return
                await store.unlink(kernel, user_id)
        if await refuse(kernel, sender.id, message.chat.id, "bad_code"):
            await send(kernel, message.chat.id, t(locale, "bad_code"))
        return
    if not text.startswith("/"):
        return
    member = await staff_member(kernel, sender.id)
    if member is None or member.actor is None:
        if await refuse(kernel, sender.id, message.chat.id, "unknown"):
            await send(kernel, message.chat.id, t(locale, "refused"))
        return
    head, *words = text.split()
    name = head[1:].split("@", 1)[0].lower()
    commands = await kernel.staff_commands()
    command = commands.get(name)
    arguments = parse_arguments(command, words) if command is not None else {}
    try:
        reply = await kernel.run_staff_command(name, actor=member.actor, arguments=arguments, channel="telegram", locale=locale)
    except ProblemError as problem:
        if problem.status == 403:
            answer = t(locale, "forbidden", name=html.escape(name))
        elif problem.status == 404:
            answer = t(locale, "unknown", name=html.escape(name))
        elif problem.status == 422 and command is not None:
            answer = t(locale, "usage", usage=html.escape(command.usage()))
        else:
            answer = html.escape(problem.detail or problem.title)
        await send(kernel, message.chat.id, answer, topic_id=message.message_thread_id)
        return
    except Exception:
        log.exception("staff command /%s failed", name)
        await send(kernel, message.chat.id, t(locale, "failed"), topic_id=message.message_thread_id)
        return
    await send(kernel, message.chat.id, html.escape(reply.text) or "-", topic_id=message.message_thread_id, markup=keyboard(reply.buttons))


# -- approvals ------------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return (value or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


async def approval_text(kernel: Kernel, approval: ApprovalRequest, locale: str) -> str:
    text = t(
        locale,
        "request",
        department=html.escape(approval.department),
        summary=html.escape(approval.summary),
        action=html.escape(approval.action),
        expires=_when(approval.expires_at),
    )
    if approval.status == "expired":
        return text + t(locale, "outcome_expired", when=_when(approval.decided_at))
    if approval.status in ("approved", "rejected"):
        who = approval.decided_by or "?"
        found = await kernel.resolve_recipients(f"user:{who}") if approval.decided_by else []
        name = found[0].name if found else who
        status = t(locale, approval.status).capitalize()
        return text + t(locale, "outcome", status=status, who=html.escape(name), when=_when(approval.decided_at))
    return text


async def decision_markup(kernel: Kernel, approval: ApprovalRequest, locale: str) -> InlineKeyboardMarkup:
    made = await store.new_callbacks(kernel, approval.id, ["approve", "reject"])
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text=t(locale, "approve"), callback_data=made["approve"]),
                InlineKeyboardButton(text=t(locale, "reject"), callback_data=made["reject"]),
            ]
        ]
    )


async def present(kernel: Kernel, approval: ApprovalRequest) -> None:
    """Show a pending request to its department (group chat, or each permitted member's private chat); edit it once decided."""
    state, settings = state_of(kernel), settings_of(kernel)
    if state.bot is None:
        return
    locale = "pt-BR"
    if approval.status != "pending":
        text = await approval_text(kernel, approval, locale)
        bot = state.bot
        for chat_id, message_id in await store.messages_of(kernel, approval.id):
            with contextlib.suppress(Exception):
                await state.sender.call(
                    lambda c=chat_id, m=message_id: bot.edit_message_text(chat_id=c, message_id=m, text=text, reply_markup=None)
                )
        return
    targets: list[tuple[int, int | None]] = []
    group = settings.departments.get(approval.department)
    if group is not None:
        targets.append((group.chat_id, group.topic_id))
    else:
        for person in await kernel.resolve_recipients(f"department:{approval.department}"):
            if person.actor is not None and person.actor.can(approval.permission):
                chat = await store.chat_of(kernel, person.user_id)
                if chat is not None:
                    targets.append((chat, None))
    text = await approval_text(kernel, approval, locale)
    for chat_id, topic_id in targets:
        markup = await decision_markup(kernel, approval, locale)
        for message in await send(kernel, chat_id, text, topic_id=topic_id, markup=markup):
            await store.remember_message(kernel, approval.id, chat_id, message.message_id)


async def on_callback(kernel: Kernel, query: CallbackQuery) -> None:
    kernel = kernel.current()
    state = state_of(kernel)
    bot = state.bot
    assert bot is not None
    locale = locale_of(query.from_user.language_code)

    async def answer(text: str, alert: bool = False) -> None:
        await state.sender.call(lambda: bot.answer_callback_query(callback_query_id=query.id, text=text, show_alert=alert))

    found = await store.callback(kernel, query.data or "")
    if found is None:
        await answer(t(locale, "gone"))
        return
    approval_id, decision = found
    member = await staff_member(kernel, query.from_user.id)
    if member is None or member.actor is None:
        await refuse(kernel, query.from_user.id, query.message.chat.id if query.message else None, "unknown")
        await answer(t(locale, "refused"), alert=True)
        return
    actor: Actor = member.actor
    approvals = kernel.approvals()
    approval = await approvals.get(approval_id)
    if approval is None:
        await answer(t(locale, "gone"))
        return
    if approval.status == "pending" and approval.expires_at <= datetime.now(UTC):
        await answer(t(locale, "not_pending", status=t(locale, "expired")))
        return
    if approval.status != "pending":
        await answer(t(locale, "not_pending", status=t(locale, approval.status)))
        return
    if not actor.can(approval.permission):
        await answer(t(locale, "not_allowed"), alert=True)
        return
    message = query.message
    if decision in ("approve", "cancel") and (approval.destructive or decision == "cancel") and message is not None:
        if decision == "approve":
            made = await store.new_callbacks(kernel, approval_id, ["confirm", "cancel"])
            markup = InlineKeyboardMarkup(
                inline_keyboard=[
                    [
                        InlineKeyboardButton(text=t(locale, "confirm"), callback_data=made["confirm"]),
                        InlineKeyboardButton(text=t(locale, "cancel"), callback_data=made["cancel"]),
                    ]
                ]
            )
            await answer(t(locale, "confirm_prompt"))
        else:
            markup = await decision_markup(kernel, approval, locale)
            await answer(t(locale, "cancel"))
        chat_id, message_id = message.chat.id, message.message_id
        await state.sender.call(lambda: bot.edit_message_reply_markup(chat_id=chat_id, message_id=message_id, reply_markup=markup))
        return
    try:
        decided = await kernel.decide_approval(approval_id, approve=decision in ("approve", "confirm"), actor=actor)
    except ProblemError as problem:
        if problem.status == 403:
            await answer(t(locale, "not_allowed"), alert=True)
        else:
            current = await approvals.get(approval_id)
            status = current.status if current is not None else "expired"
            await answer(t(locale, "not_pending", status=t(locale, status if status in TEXT["en"] else "expired")))
        return
    await answer(t(locale, "done", status=t(locale, decided.status)))


# -- command menus --------------------------------------------------------------------------


async def sync_menus(kernel: Kernel) -> None:
    """setMyCommands per scope (private chats; each linked chat with what its person may run) and language."""
    state = state_of(kernel)
    bot = state.bot
    if bot is None:
        return
    commands = await kernel.staff_commands()
    scopes: list[tuple[Any, list[Any]]] = [(BotCommandScopeAllPrivateChats(), [c for c in commands.values() if c.permission is None])]
    for user_id, chat_id in await store.all_links(kernel):
        found = await kernel.resolve_recipients(f"user:{user_id}")
        actor = found[0].actor if found else None
        allowed = [c for c in commands.values() if actor is not None and (c.permission is None or actor.can(c.permission))]
        scopes.append((BotCommandScopeChat(chat_id=chat_id), allowed))
    wanted = [(scope.model_dump_json(), tuple(sorted(c.name for c in allowed))) for scope, allowed in scopes]
    if wanted == state.menu:
        return
    for scope, allowed in scopes:
        for language, locale in (("pt", "pt-BR"), ("en", "en")):
            listed = [BotCommand(command=c.name, description=c.describe(locale)[:256]) for c in sorted(allowed, key=lambda c: c.name)]
            await state.sender.call(
                lambda s=scope, listed=listed, language=language: bot.set_my_commands(commands=listed, scope=s, language_code=language)
            )
    state.menu = wanted


async def menu_loop(kernel: Kernel) -> None:
    while True:
        current = kernel.current()
        try:
            if "telegram" in current.plugins:
                await sync_menus(current)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not update the Telegram command menus")
        await asyncio.sleep(settings_of(current).menu_interval if "telegram" in current.plugins else 1.0)


# -- polling --------------------------------------------------------------------------------


async def poll_loop(kernel: Kernel) -> None:
    """Poll getUpdates while holding the poller lease; other workers stand by (Telegram answers 409 to a second poller)."""
    state = state_of(kernel)
    bot = state.bot
    assert bot is not None
    errors = RoundErrors(log, "Telegram polling")
    while True:
        current = kernel.current()
        settings = settings_of(current)
        try:
            held, offset = await store.take_lease(current, POLLER, state.worker, settings.lease_ttl)
            state.polling = held
            if not held:
                await asyncio.sleep(min(settings.lease_ttl / 3, 5.0))
                continue
            timeout = max(0, min(settings.poll_timeout, int(settings.lease_ttl / 2)))
            updates = await bot.get_updates(offset=offset, timeout=timeout, allowed_updates=["message", "callback_query"])
            for update in updates:
                await feed(current, update)
                offset = update.update_id + 1
                await store.store_offset(current, POLLER, state.worker, offset)
            errors.succeeded()
        except asyncio.CancelledError:
            raise
        except TelegramConflictError:
            log.warning("Telegram reports another getUpdates consumer (409); backing off")
            await asyncio.sleep(1.0)
        except TelegramNetworkError as error:
            log.warning("Telegram unreachable: %s", error)
            await asyncio.sleep(1.0)
        except Exception as error:
            errors.failed(error)
            await asyncio.sleep(1.0)


async def feed(kernel: Kernel, update: Any) -> None:
    state = state_of(kernel)
    assert state.bot is not None
    try:
        await state.dispatcher.feed_update(state.bot, update)
    except Exception:
        log.exception("Telegram update %s failed", getattr(update, "update_id", "?"))


def build(kernel: Kernel, token: str, api_base: str) -> tuple[Bot, Dispatcher]:
    from aiogram.client.default import DefaultBotProperties
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    session = AiohttpSession(api=TelegramAPIServer.from_base(api_base)) if api_base else AiohttpSession()
    bot = Bot(token=token, session=session, default=DefaultBotProperties(parse_mode="HTML"))
    router = Router(name="botcriptofy")

    @router.message()
    async def message_handler(message: Message) -> None:
        await on_message(kernel, message)

    @router.callback_query()
    async def callback_handler(query: CallbackQuery) -> None:
        await on_callback(kernel, query)

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    return bot, dispatcher
