"""Fixtures for the storage plugin's tests: a kernel with storage and the sample plugin, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import botcriptofy_storage

from . import storage_sample

FAST_RELAY = {"relay_poll_interval": 0.05, "retry_base_delay": 0.05, "retry_max_delay": 0.2}


@pytest.fixture
def storage_kernel(database_url, kernel_harness) -> Callable[..., Awaitable[Any]]:
    """Return ``await storage_kernel(sample=..., **storage_settings)``: a started harness with storage and the sample plugin."""

    async def make(*, sample: Any = None, plugins: dict[str, Any] | None = None, url: str | None = None, **settings: Any) -> Any:
        chosen = {"storage": botcriptofy_storage, "sample": sample or storage_sample.SamplePlugin(), **(plugins or {})}
        return await kernel_harness(plugins=chosen, settings={"storage": {"url": url or database_url, **FAST_RELAY, **settings}})

    return make
