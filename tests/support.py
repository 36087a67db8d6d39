"""Helpers shared by several plugins' tests (importable as ``support``: the suite puts ``tests/`` on the path)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

STRONG_PASSWORD = "correct horse battery staple"
FAST_HASH = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}


def privacy_settings(
    database_url: str, *, redis_url: str | None = None, redis_prefix: str | None = None, base: dict[str, Any] | None = None, **sections: Any
) -> dict[str, Any]:
    """Settings for storage, auth, audit and lgpd on ``database_url`` (fast hashing), the cache on Redis when given, then ``sections``."""
    found: dict[str, Any] = {
        "storage": {"url": database_url, "relay_poll_interval": 0.05},
        "auth": dict(FAST_HASH),
        "audit": {},
        "lgpd": {"sweep_interval": 3600},
        **(base or {}),
    }
    if redis_url is not None:
        found["cache"] = {"backend": "two-layer", "redis_url": redis_url, "prefix": redis_prefix}
    for name, values in sections.items():
        found.setdefault(name, {}).update(values)
    return found


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def signup(client: Any, email: str, *, name: str = "Ana Trader", account_type: str = "trader") -> dict[str, Any]:
    """Sign a trader up through the API; the body gains ``headers`` carrying its access token."""
    response = await client.post(
        "/v1/auth/signup", json={"email": email, "password": STRONG_PASSWORD, "name": name, "account_type": account_type}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    body["headers"] = bearer(body["tokens"]["access_token"] if "tokens" in body else body["access_token"])
    return body


async def staff(harness: Any, email: str, roles: dict[str, str]) -> dict[str, str]:
    """A company staff member with ``roles``, logged in; return their auth headers."""
    from botcriptofy_auth._accounts import create_staff

    await create_staff(harness.kernel, email=email, name="Staff Member", password=STRONG_PASSWORD, roles=roles)
    response = await harness.client.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD})
    assert response.status_code == 200, response.text
    return bearer(response.json()["access_token"])


@pytest.fixture
def make_trading(database_url: str, kernel_harness: Any) -> Callable[..., Awaitable[Any]]:
    """``await make_trading(**exchanges_settings)``: storage, auth, billing, exchanges and trading on ``database_url``."""

    async def make(**exchanges: Any) -> Any:
        import botcriptofy_auth
        import botcriptofy_exchanges
        import botcriptofy_storage
        import botcriptofy_trading
        from botcriptofy_billing import BillingPlugin

        plugins = {
            "storage": botcriptofy_storage,
            "auth": botcriptofy_auth,
            "billing": BillingPlugin(),
            "exchanges": botcriptofy_exchanges,
            "trading": botcriptofy_trading,
        }
        settings = {"storage": {"url": database_url, "relay_poll_interval": 0.2}, "auth": FAST_HASH, "exchanges": exchanges}
        return await kernel_harness(plugins=plugins, settings=settings)

    return make


async def trader_signup(client: Any, email: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Sign a trader up; return their auth headers and the sign-up body."""
    response = await client.post(
        "/v1/auth/signup", json={"email": email, "password": STRONG_PASSWORD, "name": "Ana Trader", "account_type": "trader"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return bearer(body["tokens"]["access_token"]), body
