"""Helpers of the finance and subscriptions agents' tests: the harness with their plugins, and a figures plugin."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import botcriptofy_agent_finance
import botcriptofy_agent_subscriptions
from botcriptofy import hookimpl

from .conftest import FAST_HASH, PRINCIPALS

BUSINESS_PRINCIPALS = {**PRINCIPALS, "agent_finance": "finance:member", "agent_subscriptions": "subscriptions:member"}
FAST_WORKFLOWS = {"retry_initial_interval": 0.01, "retry_maximum_interval": 0.05, "watch_interval": 0.05, "graceful_shutdown": 2}


class Figures:
    """Test plugin answering ``business_metrics`` from a function of the window (what billing would count)."""

    def __init__(self, answer: Callable[[datetime, datetime], Mapping[str, int]]) -> None:
        self.answer = answer
        self.windows: list[tuple[datetime, datetime]] = []

    @hookimpl
    def business_metrics(self, kernel: Any, since: datetime, until: datetime) -> dict[str, int]:
        self.windows.append((since, until))
        return dict(self.answer(since, until))


def weeks(current: Mapping[str, int], previous: Mapping[str, int], day: Mapping[str, int] | None = None) -> Figures:
    """Figures for the last 7 days (``current``), the 7 before (``previous``) and, for shorter windows ending now, ``day``."""

    def answer(since: datetime, until: datetime) -> Mapping[str, int]:
        from datetime import UTC

        ends_now = abs((datetime.now(UTC) - until).total_seconds()) < 3600
        if not ends_now:
            return previous
        return current if until - since >= timedelta(days=6) else (day if day is not None else current)

    return Figures(answer)


async def make_business(make_agents: Any, *, plugins: Mapping[str, Any] | None = None, **settings: Any) -> Any:
    """The agents harness plus the finance and subscriptions agents, each mapped to its department's principal."""
    merged = {
        "agent_finance": botcriptofy_agent_finance,
        "agent_subscriptions": botcriptofy_agent_subscriptions,
        **(plugins or {}),
    }
    sections = {
        "auth": {**FAST_HASH, "service_principals": BUSINESS_PRINCIPALS},
        "agent_finance": {"check_interval": 3600, **settings.pop("agent_finance", {})},
        "agent_subscriptions": {"check_interval": 3600, **settings.pop("agent_subscriptions", {})},
    }
    return await make_agents(plugins=merged, **sections, **settings)
