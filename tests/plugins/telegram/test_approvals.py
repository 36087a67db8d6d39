"""Approvals in Telegram: keyboard with opaque ids, the presser's permission, races, destructive confirmation, expiry, outcome edits."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from aiogram.types import Update

from botcriptofy import Actor
from botcriptofy.testing import MemoryApprovals, wait_until
from botcriptofy_telegram._bot import feed
from botcriptofy_telegram._models import callbacks

from .conftest import link

GROUP = -2000


def keyboard_of(call):
    return [button for row in call.params["reply_markup"]["inline_keyboard"] for button in row]


async def test_presses_are_checked_against_the_pressers_permission_and_one_decision_wins(make_bot_kernel, botapi):
    approvals = MemoryApprovals()
    harness = await make_bot_kernel(plugins={"approvals": approvals}, telegram={"departments": {"finance": {"chat_id": GROUP}}})
    boss, _ = await link(harness, botapi, "boss@example.com", 111, {"finance": "manager"})
    await link(harness, botapi, "clerk@example.com", 222, {"finance": "viewer"})
    boss2, _ = await link(harness, botapi, "boss2@example.com", 333, {"finance": "manager"})
    requester = Actor(id="agent-finance", kind="service", permissions=frozenset({"finance:act"}))
    request = await harness.kernel.request_approval(
        action="billing.refund",
        summary="Refund <R$ 29> to tenant t1",
        department="finance",
        permission="finance:*",
        requester=requester,
        expires_in=600,
        payload={"tenant": "t1"},
    )
    shown = [c for c in botapi.of("sendMessage") if int(c.params["chat_id"]) == GROUP]
    assert len(shown) == 1 and "Refund &lt;R$ 29&gt; to tenant t1" in shown[0].params["text"]
    approve, reject = keyboard_of(shown[0])
    assert request.id not in approve["callback_data"] and len(approve["callback_data"]) <= 64
    async with harness.kernel.database().session(system=True) as session:
        stored = dict((await session.execute(sa.select(callbacks.c.id, callbacks.c.decision))).all())
    assert stored[approve["callback_data"]] == "approve" and stored[reject["callback_data"]] == "reject"

    # Being in the chat is not enough: a viewer's press decides nothing; a stranger is refused; forged data is refused.
    botapi.push(botapi.press(222, approve["callback_data"], chat_id=GROUP, message_id=shown[0].params.get("message_id", 1)))
    botapi.push(botapi.press(999, approve["callback_data"], chat_id=GROUP, message_id=1))
    botapi.push(botapi.press(111, f"approve:{request.id}", chat_id=GROUP, message_id=1))
    await wait_until(lambda: len(botapi.of("answerCallbackQuery")) == 3, timeout=10)
    answers = [c.params["text"] for c in botapi.of("answerCallbackQuery")]
    assert answers == ["Você não tem permissão para decidir este pedido.", "Não autorizado.", "Botão inválido."]
    assert approvals.decisions == []

    # Two managers press at once: one decision wins, the other hears it is already decided.
    presses = [
        botapi.press(111, approve["callback_data"], chat_id=GROUP, message_id=1),
        botapi.press(333, reject["callback_data"], chat_id=GROUP, message_id=1),
    ]
    updates = [Update.model_validate({"update_id": 90 + n, **press}) for n, press in enumerate(presses)]
    await asyncio.gather(*(feed(harness.kernel, update) for update in updates))  # at once, as two webhook requests would
    await wait_until(lambda: len(botapi.of("answerCallbackQuery")) == 5, timeout=10)
    assert len(approvals.decisions) == 1
    _, approved, winner = approvals.decisions[0]
    assert winner in (boss, boss2) and approved == (winner == boss)
    outcome = "aprovado" if approved else "rejeitado"
    answers = sorted(c.params["text"] for c in botapi.of("answerCallbackQuery")[3:])
    assert answers == sorted([f"Feito: {outcome}.", f"Este pedido já está {outcome}."])
    await wait_until(lambda: botapi.of("editMessageText"), timeout=10)
    edited = botapi.of("editMessageText")[0].params
    who = "Boss" if winner == boss else "Boss2"
    assert (
        int(edited["chat_id"]) == GROUP and f"<b>{outcome.capitalize()}</b> por {who} em" in edited["text"] and "reply_markup" not in edited
    )


async def test_destructive_actions_need_a_second_confirmation_and_expired_requests_change_nothing(make_bot_kernel, botapi):
    approvals = MemoryApprovals()
    harness = await make_bot_kernel(plugins={"approvals": approvals})
    boss, _ = await link(harness, botapi, "boss@example.com", 111, {"security": "manager"})
    requester = Actor(id="agent-security", kind="service")
    request = await harness.kernel.request_approval(
        action="users.block",
        summary="Block user u1",
        department="security",
        permission="security:*",
        requester=requester,
        expires_in=600,
        destructive=True,
    )
    # No group chat configured: each permitted member's private chat gets it.
    shown = [c for c in botapi.of("sendMessage") if int(c.params["chat_id"]) == 111 and "Block user u1" in c.params["text"]]
    assert len(shown) == 1
    approve, _ = keyboard_of(shown[0])
    botapi.push(botapi.press(111, approve["callback_data"], chat_id=111, message_id=5))
    await wait_until(lambda: botapi.of("editMessageReplyMarkup"), timeout=10)
    assert approvals.decisions == []
    confirm, _cancel = keyboard_of(botapi.of("editMessageReplyMarkup")[0])
    assert confirm["text"] == "⚠️ Confirmar aprovação"
    botapi.push(botapi.press(111, confirm["callback_data"], chat_id=111, message_id=5))
    await wait_until(lambda: approvals.decisions, timeout=10)
    assert approvals.decisions == [(request.id, True, boss)]

    second = await harness.kernel.request_approval(
        action="users.block", summary="Block user u2", department="security", permission="security:*", requester=requester, expires_in=600
    )
    message = next(c for c in botapi.of("sendMessage") if "Block user u2" in c.params["text"])
    await approvals.expire(second.id)
    await wait_until(lambda: any("Expirado" in c.params["text"] for c in botapi.of("editMessageText")), timeout=10)
    approve, _ = keyboard_of(message)
    botapi.push(botapi.press(111, approve["callback_data"], chat_id=111, message_id=6))
    await wait_until(lambda: botapi.of("answerCallbackQuery")[-1].params["text"] == "Este pedido já está expirado.", timeout=10)
    assert len(approvals.decisions) == 1
