"""Readiness as metrics: ``botcriptofy_ready`` and ``botcriptofy_readiness_check{check}``, refreshed at each scrape.

The same checks as ``/-/ready`` (every plugin's ``health_checks``, plus plugins enabled but not
started in this worker), run by the ``/metrics`` endpoint before it answers, so an alert can fire on
readiness failing without a separate probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric


def _name(plugin: str, name: str) -> str:
    return name if name.startswith(f"{plugin}.") else f"{plugin}.{name}"


class Readiness:
    """The last readiness verdict of this worker, per check."""

    def __init__(self) -> None:
        self.checks: dict[str, bool] = {}

    async def refresh(self, kernel: Any) -> None:
        found: dict[str, bool] = {}
        for plugin, contributed in (await kernel.broadcast("health_checks", kernel=kernel)).items():
            for check in contributed or ():
                try:
                    result = check.check()
                    if asyncio.iscoroutine(result):
                        async with asyncio.timeout(check.timeout):
                            result = await result
                    ok = result is None or bool(result)
                except Exception:
                    ok = False
                found[_name(plugin, check.name)] = ok
        for plugin in kernel.runtime.not_ready():
            found[f"{plugin}.started"] = False
        self.checks = found

    def describe(self) -> list[Metric]:
        return list(self._families({}))

    def collect(self) -> Iterator[Metric]:
        return self._families(self.checks)

    @staticmethod
    def _families(checks: dict[str, bool]) -> Iterator[Metric]:
        ready = GaugeMetricFamily("botcriptofy_ready", "1 while every readiness check passes (as /-/ready), checked at scrape time.")
        per_check = GaugeMetricFamily("botcriptofy_readiness_check", "1 while this readiness check passes, 0 while it fails.",
                                      labels=["check"])
        ready.add_metric([], 1 if all(checks.values()) else 0)
        for name, ok in sorted(checks.items()):
            per_check.add_metric([name], 1 if ok else 0)
        yield ready
        yield per_check
