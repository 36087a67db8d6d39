"""Telegram fixtures: the local Bot API server and a kernel with storage, auth, notifications and telegram pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest

import botcriptofy_auth
import botcriptofy_notifications
import botcriptofy_storage
import botcriptofy_telegram
from botcriptofy.testing import wait_until
from botcriptofy_auth._accounts import create_staff

from .botapi import BotApiServer

TOKEN = "123456:TEST-token"
PASSWORD = "correct horse battery staple"


def settings(database_url: str, **sections: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "storage": {"url": database_url, "relay_poll_interval": 0.05},
        "auth": {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1},
        "notifications": {"poll_interval": 0.05, "retry_base": 0.05, "retry_max": 0.2, "lease_ttl": 2.0},
    }
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    return merged


async def add_staff(harness: Any, email: str, roles: dict[str, str], *, name: str = "Staff Member") -> str:
    user = await create_staff(harness.kernel, email=email, name=name, password=PASSWORD, roles=roles, by="test")
    return str(user.id)


async def token_for(harness: Any, email: str) -> dict[str, str]:
    response = await harness.client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


FAST = {
    "per_second": 1000.0,
    "private_interval": 0.0,
    "group_per_minute": 600000.0,
    "poll_timeout": 1,
    "lease_ttl": 3.0,
    "menu_interval": 0.2,
}


@pytest.fixture
async def botapi() -> AsyncIterator[BotApiServer]:
    server = BotApiServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def make_bot_kernel(database_url: str, botapi: BotApiServer, kernel_harness: Any) -> Callable[..., Awaitable[Any]]:
    async def make(
        *, plugins: Mapping[str, Any] | None = None, url: str | None = None, telegram: Mapping[str, Any] | None = None, **sections: Any
    ) -> Any:
        merged = {
            "storage": botcriptofy_storage,
            "auth": botcriptofy_auth,
            "notifications": botcriptofy_notifications,
            "telegram": botcriptofy_telegram,
            **(plugins or {}),
        }
        bot = {"bot_token": TOKEN, "api_base": botapi.url, **FAST, **(telegram or {})}
        return await kernel_harness(plugins=merged, settings=settings(url or database_url, telegram=bot, **sections))

    return make


async def link(harness: Any, botapi: BotApiServer, email: str, telegram_id: int, roles: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Create a staff member, link their Telegram account through /start <code>; return their user id and HTTP headers."""
    user_id = await add_staff(harness, email, roles, name=email.split("@")[0].title())
    headers = await token_for(harness, email)
    response = await harness.client.post("/v1/me/telegram/link", headers=headers)
    assert response.status_code == 201, response.text
    answer = await ask(botapi, telegram_id, f"/start {response.json()['code']}")
    assert answer.startswith("Conta vinculada"), botapi.texts(telegram_id)
    return user_id, headers


async def ask(botapi: BotApiServer, user_id: int, text: str, *, language: str = "pt-br") -> str:
    """Send ``text`` as ``user_id`` in their private chat; return the bot's next answer there.

    Notifications reach the same chat meanwhile (a finance viewer gets billing's payment-failed alert
    whenever the dispatcher gets to it, even while their link is being confirmed): they open with their
    subject in bold, answers never do.
    """
    before = len(botapi.texts(user_id))
    botapi.push(botapi.message(user_id, text, language=language))

    def answers() -> list[str]:
        return [t for t in botapi.texts(user_id)[before:] if not t.startswith("<b>")]

    await wait_until(answers, timeout=10)
    return answers()[0]
