"""Prometheus collectors of the plugin, one set per runtime (registered by the kernel's ``register_metrics``)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric


class Metrics:
    """Decisions, backend switches and errors, and penalties."""

    def __init__(self) -> None:
        self.requests = RequestCounts()
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

    def collectors(self) -> list[Any]:
        return [self.requests, self.switches, self.degraded, self.errors, self.penalties]

    def count(self, result: str, limit: str = "") -> None:
        counts = self.requests.counts
        key = (result, limit)
        counts[key] = counts.get(key, 0) + 1


class RequestCounts:
    """``botcriptofy_ratelimit_requests_total{result, limit}``: one count per request, kept as plain integers.

    prometheus-client's ``Counter`` takes a lock per increment, and under ``botcriptofy serve`` (its
    multiprocess mode) writes the value to a memory-mapped file as well: 1.2 µs a request. These counts
    are read at collection; under several workers the observability plugin's snapshots carry them, and
    a counter is summed over every worker that ever wrote one, as the multiprocess files were.
    """

    NAME = "botcriptofy_ratelimit_requests"
    HELP = "Requests checked by the rate limiter, by result and by the limit that refused them."

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.NAME, self.HELP, labels=["result", "limit"])]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.NAME, self.HELP, labels=["result", "limit"])
        for labels, value in list(self.counts.items()):
            family.add_metric(list(labels), value)
        yield family


_by_runtime: weakref.WeakKeyDictionary[Any, Metrics] = weakref.WeakKeyDictionary()


def metrics_for(runtime: Any) -> Metrics:
    """The collectors of one runtime: they outlive restarts of the plugin, as the kernel keeps them registered."""
    metrics = _by_runtime.get(runtime)
    if metrics is None:
        metrics = _by_runtime[runtime] = Metrics()
    return metrics
