"""The e-mail channel against a real SMTP server (aiosmtpd): multipart, headers, SMTP down then up (retried, delivered once)."""

from __future__ import annotations

import email
import socket
from email import policy

import sqlalchemy as sa
from aiosmtpd.controller import Controller

import botcriptofy_auth
import botcriptofy_email
import botcriptofy_notifications
import botcriptofy_storage
from botcriptofy import Notification
from botcriptofy.testing import wait_until
from botcriptofy_auth._accounts import create_staff


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"


async def test_smtp_down_then_up_delivers_once_with_text_html_and_headers(database_url, kernel_harness):
    port = free_port()
    plugins = {
        "storage": botcriptofy_storage,
        "auth": botcriptofy_auth,
        "notifications": botcriptofy_notifications,
        "email": botcriptofy_email,
    }
    harness = await kernel_harness(
        plugins=plugins,
        settings={
            "storage": {"url": database_url, "relay_poll_interval": 0.05},
            "auth": {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1},
            "notifications": {"poll_interval": 0.05, "retry_base": 0.2, "retry_max": 0.5},
            "email": {
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "reply_to": "suporte@botcriptofy.example",
                "unsubscribe_url": "https://botcriptofy.example/u",
                "from_address": "BotCriptoFy <no-reply@botcriptofy.example>",
            },
        },
    )
    user = await create_staff(
        harness.kernel, email="ana@example.com", name="Ana", password="correct horse battery staple", roles={"finance": "member"}, by="test"
    )
    await harness.kernel.notify(
        Notification(recipient=f"user:{user.id}", subject="Relatório <semanal>", body="Receita: <b>R$ 10</b>\nfim", category="agent.report")
    )
    await harness.kernel.notify(
        Notification(recipient=f"user:{user.id}", subject="Alerta", body="x", category="agent.alert", severity="critical")
    )

    async def failed_once():
        async with harness.kernel.database().session(system=True) as session:
            rows = (await session.execute(sa.text("SELECT attempts, status, last_error FROM notifications_deliveries"))).all()
        return len(rows) == 2 and all(r[0] >= 1 and r[1] == "queued" and r[2] for r in rows)

    await wait_until(failed_once, timeout=15)  # the SMTP server is down: retried, not lost
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        await wait_until(lambda: len(inbox.messages) == 2, timeout=15)

        async def sent():
            async with harness.kernel.database().session(system=True) as session:
                rows = (await session.execute(sa.text("SELECT status FROM notifications_deliveries"))).all()
            return [r[0] for r in rows] == ["sent", "sent"]

        await wait_until(sent, timeout=10)
    finally:
        controller.stop()
    assert len(inbox.messages) == 2
    by_subject = {m["Subject"]: (to, m) for to, m in inbox.messages}
    to, report = by_subject["Relatório <semanal>"]
    assert to == ["ana@example.com"] and report["Reply-To"] == "suporte@botcriptofy.example"
    assert (
        report["List-Unsubscribe"] == "<https://botcriptofy.example/u>" and report["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    )
    assert report.get_body(("plain",)).get_content().replace("\r\n", "\n").strip() == "Receita: <b>R$ 10</b>\nfim"
    page = report.get_body(("html",)).get_content()
    assert "Receita: &lt;b&gt;R$ 10&lt;/b&gt;<br>" in page and "<title>Relatório &lt;semanal&gt;</title>" in page
    _, alert = by_subject["Alerta"]
    assert alert["List-Unsubscribe"] is None  # critical alerts are not unsubscribable
