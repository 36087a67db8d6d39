"""Fixtures for the lgpd tests: every first-party plugin with tables or caches, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

import botcriptofy_audit
import botcriptofy_auth
import botcriptofy_billing
import botcriptofy_cache
import botcriptofy_lgpd
import botcriptofy_notifications
import botcriptofy_storage
import botcriptofy_telegram
import botcriptofy_webhooks
from support import privacy_settings

PLUGINS: dict[str, Any] = {
    "storage": botcriptofy_storage,
    "auth": botcriptofy_auth,
    "cache": botcriptofy_cache,
    "billing": botcriptofy_billing.plugin,
    "audit": botcriptofy_audit,
    "lgpd": botcriptofy_lgpd,
    "notifications": botcriptofy_notifications,
    "telegram": botcriptofy_telegram,
    "webhooks": botcriptofy_webhooks,
}


def settings(database_url: str, **options: Any) -> dict[str, Any]:
    return privacy_settings(database_url, base={"telegram": {"mode": "off"}}, **options)


@pytest.fixture
def make_privacy(database_url: str, kernel_harness: Any) -> Callable[..., Awaitable[Any]]:
    """``await make_privacy(**sections)``: ``PLUGINS`` on ``database_url``; ``plugins`` adds some (None leaves one out)."""

    async def make(*, plugins: Mapping[str, Any] | None = None, **sections: Any) -> Any:
        chosen = {name: plugin for name, plugin in {**PLUGINS, **(plugins or {})}.items() if plugin is not None}
        return await kernel_harness(plugins=chosen, settings=settings(database_url, **sections))

    return make
