"""Fixtures for the audit plugin's tests: storage and audit alone, or with every plugin that records entries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

import botcriptofy_audit
import botcriptofy_auth
import botcriptofy_billing
import botcriptofy_cache
import botcriptofy_lgpd
import botcriptofy_storage
from support import privacy_settings


def audit_settings(database_url: str, **audit: Any) -> dict[str, Any]:
    return {"storage": {"url": database_url, "relay_poll_interval": 0.05}, "audit": audit}


@pytest.fixture
def make_audit(database_url: str, kernel_harness: Any) -> Callable[..., Awaitable[Any]]:
    """``await make_audit(**audit_settings)``: a started harness with storage and audit on ``database_url``."""

    async def make(*, plugins: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None, **audit: Any) -> Any:
        merged = {"storage": botcriptofy_storage, "audit": botcriptofy_audit, **(plugins or {})}
        return await kernel_harness(plugins=merged, settings={**audit_settings(database_url, **audit), **(settings or {})})

    return make


PLUGINS: dict[str, Any] = {
    "storage": botcriptofy_storage,
    "auth": botcriptofy_auth,
    "cache": botcriptofy_cache,
    "billing": botcriptofy_billing.plugin,
    "audit": botcriptofy_audit,
    "lgpd": botcriptofy_lgpd,
}


def full_settings(database_url: str, **options: Any) -> dict[str, Any]:
    return privacy_settings(database_url, **options)
