"""Prometheus collectors of the plugin, one set per runtime (registered by the kernel's ``register_metrics``)."""

from __future__ import annotations

import weakref
from typing import Any

from prometheus_client import Counter, Gauge


class Metrics:
    """Decisions, backend switches and errors, and penalties."""

    def __init__(self) -> None:
        self.requests = Counter(
            "botcriptofy_ratelimit_requests",
            "Requests checked by the rate limiter, by result and by the limit that refused them.",
            ["result", "limit"],
            registry=None,
        )
        self.switches = Counter(
            "botcriptofy_ratelimit_backend_switches",
            "Switches of the rate-limit backend: to 'fallback' or 'closed' when Redis is lost, to 'redis' when it is back.",
            ["to"],
            registry=None,
        )
        self.degraded = Gauge(
            "botcriptofy_ratelimit_degraded", "1 while Redis is unreachable and the outage mode is in force.", registry=None,
            multiprocess_mode="livemax",  # under several workers: 1 while any live worker is degraded
        )
        self.errors = Counter("botcriptofy_ratelimit_backend_errors", "Redis errors met by the rate limiter.", registry=None)
        self.penalties = Counter(
            "botcriptofy_ratelimit_penalties", "Penalty points added, by the response status that caused them.", ["status"], registry=None
        )
        self._children: dict[tuple[str, str], Any] = {}

    def collectors(self) -> list[Any]:
        return [self.requests, self.switches, self.degraded, self.errors, self.penalties]

    def count(self, result: str, limit: str = "") -> None:
        child = self._children.get((result, limit))
        if child is None:
            child = self._children[(result, limit)] = self.requests.labels(result, limit)
        child.inc()


_by_runtime: weakref.WeakKeyDictionary[Any, Metrics] = weakref.WeakKeyDictionary()


def metrics_for(runtime: Any) -> Metrics:
    """The collectors of one runtime: they outlive restarts of the plugin, as the kernel keeps them registered."""
    metrics = _by_runtime.get(runtime)
    if metrics is None:
        metrics = _by_runtime[runtime] = Metrics()
    return metrics
