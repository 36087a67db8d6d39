"""Fixtures for the auth plugin's tests: a kernel with storage and auth over SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

import botcriptofy_auth
import botcriptofy_storage
from botcriptofy import Entitlements, EventHandler, Notification, hookimpl

# Cheap argon2 parameters: the tests exercise the flows, bench/auth_bench.py measures the real cost.
FAST_HASH = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}
STRONG_PASSWORD = "correct horse battery staple"


def auth_settings(database_url: str, **auth: Any) -> dict[str, Any]:
    return {"storage": {"url": database_url, "relay_poll_interval": 0.2}, "auth": {**FAST_HASH, **auth}}


@pytest.fixture
def make_auth(database_url: str, kernel_harness: Any) -> Callable[..., Awaitable[Any]]:
    """``await make_auth(**auth_settings)``: a started harness with the storage and auth plugins on ``database_url``.

    ``database_url`` comes first so that the harness stops before its database is dropped.
    """

    async def make(*, plugins: Mapping[str, Any] | None = None, url: str | None = None, **auth: Any) -> Any:
        mailbox = Mailbox()
        merged = {"storage": botcriptofy_storage, "auth": botcriptofy_auth, "mailbox": mailbox, **(plugins or {})}
        harness = await kernel_harness(plugins=merged, settings=auth_settings(url or database_url, **auth))
        harness.mailbox = mailbox
        return harness

    return make


async def signup(
    client: Any, email: str, *, password: str = STRONG_PASSWORD, name: str = "Ana Trader", account_type: str = "trader"
) -> dict[str, Any]:
    response = await client.post("/v1/auth/signup", json={"email": email, "password": password, "name": name, "account_type": account_type})
    assert response.status_code == 201, response.text
    return response.json()


class Mailbox:
    """A test plugin receiving ``kernel.notify`` while no notifications plugin routes (the kernel calls ``send_notification``)."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []

    @hookimpl
    def send_notification(self, kernel: Any, notification: Notification) -> None:
        self.notifications.append(notification)

    async def token_for(self, kernel: Any, email: str, template: str) -> str:
        """The token of the newest ``template`` link addressed to ``email`` (resolved as the notifications plugin would).

        Without a router the kernel hands the notification over before the token's transaction commits:
        wait until the link resolves.
        """
        deadline = asyncio.get_running_loop().time() + 5.0
        while True:
            for notification in reversed(self.notifications):
                if notification.template != template:
                    continue
                people = await kernel.resolve_recipients(notification.recipient)
                if people and people[0].email == email:
                    return str(notification.params["token"])
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no open {template} link to {email} among {len(self.notifications)} notifications")
            await asyncio.sleep(0.02)


async def verify(harness: Any, email: str) -> None:
    """Verify ``email`` the way its owner does: the token of the link sent to it, posted back."""
    token = await harness.mailbox.token_for(harness.kernel, email, "auth.verify_email")
    response = await harness.client.post("/v1/auth/email/verify", json={"token": token})
    assert response.status_code == 200, response.text


def fullwidth(text: str) -> str:
    """The full-width (compatibility) form of ASCII letters, which NFKC folds back to ASCII."""
    return "".join(chr(ord(ch) + 0xFEE0) if ch.isascii() and ch.isalpha() else ch for ch in text)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Recorder:
    """A test plugin that records every event the kernel delivers."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    @hookimpl
    def register_event_handlers(self, kernel: Any) -> list[EventHandler]:
        return [EventHandler("auth-test-recorder", self.envelopes.append, events=("*",))]

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.envelopes if e.type == event_type]


class Billing:
    """A test plugin that answers entitlements like the billing plugin does."""

    def __init__(self, plan: str = "pro", features: frozenset[str] = frozenset({"api_keys", "webhooks", "ai_insights"})) -> None:
        self.plan, self.features = plan, features

    @hookimpl
    def entitlements_for(self, kernel: Any, tenant_id: str) -> Entitlements:
        return Entitlements(plan=self.plan, limits={"bots": 10, "orders_per_day": None}, features=self.features)


async def login(client: Any, email: str, password: str = STRONG_PASSWORD, **extra: Any) -> Any:
    return await client.post("/v1/auth/login", json={"email": email, "password": password, **extra})
