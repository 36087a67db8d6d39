"""Account e-mails end to end: the notifications and e-mail plugins deliver to a real SMTP server (aiosmtpd).

The test reads each received message, takes the link out of it, and finishes the flow through the
HTTP API, as a person with a mailbox would.
"""

from __future__ import annotations

import email
import re
import socket
from email import policy

from aiosmtpd.controller import Controller

import botcriptofy_auth
import botcriptofy_email
import botcriptofy_notifications
import botcriptofy_storage
from botcriptofy.testing import wait_until

from .conftest import FAST_HASH, STRONG_PASSWORD, bearer, login, signup

LINKS = "https://app.botcriptofy.example/account"
NEW_PASSWORD = "a passphrase chosen from the e-mail link"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mailboxes:
    """An aiosmtpd handler keeping every message by recipient address."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [message for recipients, message in self.messages if address in recipients]

    def link(self, address: str, page: str, nth: int = -1) -> str:
        """The token of the ``page`` link in the ``nth`` message to ``address`` (read from its plain-text part)."""
        text = self.to(address)[nth].get_body(preferencelist=("plain",)).get_content()
        match = re.search(re.escape(f"{LINKS}/{page}?token=") + r"([A-Za-z0-9_-]+)", text)
        assert match, text
        return match.group(1)


async def test_verify_reset_and_change_the_address_through_real_mail(database_url, kernel_harness):
    port = free_port()
    mailboxes = Mailboxes()
    controller = Controller(mailboxes, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        harness = await kernel_harness(
            plugins={
                "storage": botcriptofy_storage,
                "auth": botcriptofy_auth,
                "notifications": botcriptofy_notifications,
                "email": botcriptofy_email,
            },
            settings={
                "storage": {"url": database_url, "relay_poll_interval": 0.05},
                "auth": {**FAST_HASH, "account_link_url": LINKS, "account_mail_interval": 0},
                "notifications": {"poll_interval": 0.05, "retry_base": 0.2, "retry_max": 0.5, "default_locale": "en"},
                "email": {
                    "host": "127.0.0.1",
                    "port": port,
                    "security": "none",
                    "from_address": "BotCriptoFy <no-reply@botcriptofy.example>",
                },
            },
        )
        client = harness.client

        # Sign-up: the verification e-mail arrives; its link verifies the address.
        body = await signup(client, "mailbox@example.com", name="Mara")
        access = bearer(body["tokens"]["access_token"])
        await wait_until(lambda: mailboxes.to("mailbox@example.com"), timeout=15)
        message = mailboxes.to("mailbox@example.com")[0]
        assert message["Subject"] == "Confirm your e-mail address" and "List-Unsubscribe" not in message
        assert message.get_body(preferencelist=("html",)) is not None
        token = mailboxes.link("mailbox@example.com", "verify-email")
        # The link is not in the in-app inbox: reading the inbox must not prove the mailbox.
        inbox = (await client.get("/v1/notifications", headers=access)).json()
        assert all(token not in item["body"] for item in inbox["items"])
        assert (await client.post("/v1/auth/email/verify", json={"token": token})).status_code == 200
        assert (await client.get("/v1/me", headers=access)).json()["user"]["email_verified"] is True

        # A person who turned every channel off still gets the account's own mail (a mailbox, not the inbox).
        muted = await client.put("/v1/notifications/preferences", headers=access, json={"channels": {"*": []}})
        assert muted.status_code == 200, muted.text

        # Forgotten password: the reset e-mail's link sets a new one and ends every session.
        assert (await client.post("/v1/auth/password/forgot", json={"email": "mailbox@example.com"})).status_code == 202
        await wait_until(lambda: len(mailboxes.to("mailbox@example.com")) == 2, timeout=15)
        assert mailboxes.to("mailbox@example.com")[1]["Subject"] == "Reset your password"
        token = mailboxes.link("mailbox@example.com", "reset-password")
        reset = await client.post("/v1/auth/password/reset", json={"token": token, "new_password": NEW_PASSWORD})
        assert reset.status_code == 200 and reset.json()["revoked"] == 1
        assert (await client.get("/v1/me", headers=access)).status_code == 401
        assert (await login(client, "mailbox@example.com", STRONG_PASSWORD)).status_code == 401
        fresh = await login(client, "mailbox@example.com", NEW_PASSWORD)
        assert fresh.status_code == 200
        access = bearer(fresh.json()["access_token"])

        # E-mail change: the new address (not yet anyone's) gets its link, the current one its notice.
        started = await client.post(
            "/v1/auth/email/change", headers=access, json={"new_email": "moved@example.com", "password": NEW_PASSWORD}
        )
        assert started.status_code == 202, started.text
        await wait_until(lambda: mailboxes.to("moved@example.com") and len(mailboxes.to("mailbox@example.com")) == 3, timeout=15)
        notice = mailboxes.to("mailbox@example.com")[2]
        assert "m***@example.com" in notice.get_body(preferencelist=("plain",)).get_content()
        confirm = mailboxes.link("moved@example.com", "confirm-email-change")
        review = mailboxes.link("mailbox@example.com", "review-email-change", nth=2)
        assert (await client.post("/v1/auth/email/change/confirm", json={"token": confirm})).json()["status"] == "pending"
        assert (await client.post("/v1/auth/email/change/confirm", json={"token": review})).json()["status"] == "changed"
        me = (await client.get("/v1/me", headers=access)).json()
        assert me["user"]["email"] == "moved@example.com" and me["user"]["email_verified"] is True
        assert (await login(client, "moved@example.com", NEW_PASSWORD)).status_code == 200
        # Each message went once, to its own address only.
        assert sorted(tuple(r) for r, _ in mailboxes.messages) == sorted([("mailbox@example.com",)] * 3 + [("moved@example.com",)])
    finally:
        controller.stop()
