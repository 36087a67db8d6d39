"""The staff bot against a local Bot API server: linking, strangers, commands, RBAC, menus, department sends, 429s, webhook mode."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from botcriptofy import CommandReply, EventHandler, Notification, StaffCommand, hookimpl
from botcriptofy.testing import wait_until
from botcriptofy_auth._accounts import set_blocked
from botcriptofy_telegram._models import codes

from .conftest import add_staff, link, token_for


class Recorder:
    def __init__(self) -> None:
        self.events: list = []

    @hookimpl
    def register_event_handlers(self, kernel):
        return [EventHandler("telegram-test-recorder", self.events.append, events=("telegram.access_refused",))]


async def test_linking_with_single_use_expiring_codes_and_strangers_refused(make_bot_kernel, botapi):
    recorder = Recorder()
    harness = await make_bot_kernel(plugins={"recorder": recorder})
    user_id, headers = await link(harness, botapi, "ana@example.com", 111, {"finance": "viewer"})

    # A code works once: used again by someone else it is refused, and a wrong code too.
    again = (await harness.client.post("/v1/me/telegram/link", headers=headers)).json()["code"]
    botapi.push(botapi.message(111, f"/start {again}"))
    await wait_until(lambda: len(botapi.texts(111)) == 2, timeout=10)
    botapi.push(botapi.message(222, f"/start {again}"))
    botapi.push(botapi.message(223, "/start not-a-code"))
    await wait_until(lambda: botapi.texts(222) and botapi.texts(223), timeout=10)
    assert botapi.texts(222) == botapi.texts(223) == ["Código inválido ou expirado. Gere outro em POST /v1/me/telegram/link."]

    second = (await harness.client.post("/v1/me/telegram/link", headers=headers)).json()["code"]
    async with harness.kernel.database().session(system=True) as session:
        await session.execute(sa.update(codes).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    botapi.push(botapi.message(333, f"/start {second}"))
    await wait_until(lambda: botapi.texts(333), timeout=10)
    assert botapi.texts(333)[0].startswith("Código inválido")

    # A stranger: one neutral reply, nothing runs, one security event per window.
    botapi.push(botapi.message(444, "/whoami", username="ana"))  # a username proves nothing
    botapi.push(botapi.message(444, "/health"))
    await wait_until(lambda: len([e for e in recorder.events if e.payload["telegram_user_id"] == 444]) == 1, timeout=10)
    # The reply goes out after the security event is published: wait for it, then for two more polls (both
    # messages handled) before checking that the second one got no reply of its own.
    await wait_until(lambda: botapi.texts(444), timeout=10)
    polls = len(botapi.of("getUpdates"))
    await wait_until(lambda: len(botapi.of("getUpdates")) >= polls + 2, timeout=10)
    assert botapi.texts(444) == ["Não autorizado."]

    # The linked person runs commands; /help lists only what they may run; a disabled account loses the bot at once.
    botapi.push(botapi.message(111, "/help"))
    await wait_until(lambda: len(botapi.texts(111)) == 3, timeout=10)
    assert "/whoami" in botapi.texts(111)[2] and "/health" not in botapi.texts(111)[2] and "/unlink" in botapi.texts(111)[2]
    await set_blocked(harness.kernel, user_id=user_id, blocked=True, reason="test", by="test")
    botapi.push(botapi.message(111, "/whoami"))
    await wait_until(lambda: len(botapi.texts(111)) == 4, timeout=10)
    assert botapi.texts(111)[3] == "Não autorizado."


async def test_commands_refuse_without_permission_and_answer_usage_for_bad_arguments(make_bot_kernel, botapi):
    from pydantic import BaseModel, Field

    class Arguments(BaseModel):
        times: int = Field(ge=1, le=3)

    class Pinger:
        @hookimpl
        def register_staff_commands(self, kernel):
            async def ping(context):
                return CommandReply("<pong>" * context.arguments.times)

            return [StaffCommand("ping", {"pt-BR": "Pinga", "en": "Pings"}, ping, permission="finance:read", arguments=Arguments)]

    harness = await make_bot_kernel(plugins={"pinger": Pinger()})
    await link(harness, botapi, "ana@example.com", 111, {"finance": "viewer"})
    for text in ("/health", "/ping 2", "/ping x", "/ping times=9", "/nope", "/ping@botcriptofy_bot 1"):
        botapi.push(botapi.message(111, text))
    await wait_until(lambda: len(botapi.texts(111)) == 7, timeout=10)
    assert botapi.texts(111)[1:] == [
        "Sem permissão para /health.",
        "&lt;pong&gt;&lt;pong&gt;",
        "Uso: /ping &lt;times&gt;",
        "Uso: /ping &lt;times&gt;",
        "Comando desconhecido: /nope. Envie /help.",
        "&lt;pong&gt;",
    ]

    # Command menus: per linked chat with what that person may run, in both languages; disabling a plugin updates them.
    def menu_for_chat(chat_id):
        calls = [c for c in botapi.of("setMyCommands") if c.params["scope"].get("chat_id") == chat_id and c.params["language_code"] == "en"]
        return [item["command"] for item in calls[-1].params["commands"]] if calls else None

    await wait_until(lambda: menu_for_chat(111) == ["help", "ping", "unlink", "whoami"], timeout=10)
    import tomllib

    current = tomllib.loads((harness.settings_dir / "settings.toml").read_text())["default"]
    assert (await harness.apply({**current, "plugins": {"disabled": ["pinger"]}})).applied
    await wait_until(lambda: menu_for_chat(111) == ["help", "unlink", "whoami"], timeout=10)

    # Unlink from the bot's side.
    botapi.push(botapi.message(111, "/unlink"))
    await wait_until(lambda: botapi.texts(111)[-1] == "Conta do Telegram desvinculada.", timeout=10)
    botapi.push(botapi.message(111, "/whoami"))
    await wait_until(lambda: botapi.texts(111)[-1] == "Não autorizado.", timeout=10)


async def test_department_burst_keeps_order_and_pace_and_survives_a_429_storm(make_bot_kernel, botapi):
    harness = await make_bot_kernel(
        telegram={"departments": {"security": {"chat_id": -100, "topic_id": 7}}, "group_per_minute": 6000.0},  # 10 ms apart
        notifications={"flood_cap": 1000},
    )
    botapi.throttle["sendMessage"] = [1, 1, 1]
    for number in range(200):
        await harness.kernel.notify(Notification(recipient="department:security", subject=f"alert {number:03}", body="<x>"))
    await wait_until(lambda: len(botapi.texts(-100)) == 200, timeout=60)
    sends = [c for c in botapi.of("sendMessage") if int(c.params["chat_id"]) == -100]
    assert [s.params["text"].split("\n")[0] for s in sends] == [f"<b>alert {n:03}</b>" for n in range(200)]
    assert all(s.params["text"].endswith("&lt;x&gt;") and s.params["message_thread_id"] == 7 for s in sends)
    gaps = [b.at - a.at for a, b in itertools.pairwise(sends)]
    # The pace is the sender's: the span of 200 sends proves it; single gaps, timed where the server
    # receives them, are compressed by scheduling jitter, so they only must never be bursts.
    assert sends[-1].at - sends[0].at >= 199 * 0.01 and min(gaps) >= 0.002
    assert len(botapi.of("sendMessage:429")) == 3

    async def all_sent():
        async with harness.kernel.database().session(system=True) as session:
            rows = (await session.execute(sa.text("SELECT status, count(*) FROM notifications_deliveries GROUP BY status"))).all()
        return dict(rows) == {"sent": 200}

    await wait_until(all_sent, timeout=10)


async def test_long_text_is_split_and_personal_notifications_reach_linked_chats(make_bot_kernel, botapi):
    harness = await make_bot_kernel()
    await link(harness, botapi, "ana@example.com", 111, {"finance": "member"})
    unlinked = await add_staff(harness, "bob@example.com", {"finance": "member"})
    body = "\n".join(f"linha {n} " + "x" * 90 for n in range(100))
    await harness.kernel.notify(Notification(recipient="department:finance", subject="Relatório", body=body))
    await wait_until(lambda: len(botapi.texts(111)) >= 4, timeout=10)
    parts = botapi.texts(111)[1:]
    assert all(len(p) <= 4096 for p in parts) and len(parts) == 3
    assert "".join(parts).replace("\n", "") == f"<b>Relatório</b>{body}".replace("\n", "")

    async def refused():
        async with harness.kernel.database().session(system=True) as session:
            row = (
                await session.execute(sa.text(f"SELECT status, last_error FROM notifications_deliveries WHERE target = '{unlinked}'"))
            ).first()
        return row is not None and row[0] == "failed" and "linked" in row[1]

    await wait_until(refused, timeout=10)


async def test_webhook_mode_checks_the_secret(make_bot_kernel, botapi):
    harness = await make_bot_kernel(
        telegram={"mode": "webhook", "webhook_secret": "s3cret-value", "webhook_url": "https://example.test/hook"}
    )
    assert botapi.of("setWebhook")[0].params["secret_token"] == "s3cret-value"
    await link_via_webhook(harness, botapi)
    update = botapi.message(555, "/whoami")
    update["update_id"] = 1
    missing = await harness.client.post("/v1/telegram/webhook", json=update)
    wrong = await harness.client.post("/v1/telegram/webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-valuX"})
    assert missing.status_code == wrong.status_code == 401
    assert botapi.texts(555) == []
    ok = await harness.client.post("/v1/telegram/webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-value"})
    assert ok.status_code == 200 and botapi.texts(555) == ["Não autorizado."]
    bad = await harness.client.post("/v1/telegram/webhook", content=b"{", headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-value"})
    assert bad.status_code == 400
    assert botapi.of("getUpdates") == []


async def link_via_webhook(harness, botapi):
    await add_staff(harness, "ana@example.com", {"finance": "viewer"})
    headers = await token_for(harness, "ana@example.com")
    code = (await harness.client.post("/v1/me/telegram/link", headers=headers)).json()["code"]
    update = {"update_id": 5, **botapi.message(111, f"/start {code}")}
    response = await harness.client.post("/v1/telegram/webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-value"})
    assert response.status_code == 200
    assert botapi.texts(111)[0].startswith("Conta vinculada")
