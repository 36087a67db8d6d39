"""The plugin's Prometheus collectors: HTTP request series, kernel state and the process.

One :class:`Collectors` exists per runtime (it lives in the kernel stash, which every generation
inherits), so the same collector objects serve every generation: they are registered once, when the
plugin starts, and the kernel unregisters them when the plugin is disabled.
"""

from __future__ import annotations

import gc
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.utils import floatToGoString

LABELS = ("route", "method", "status", "generation")
# Seconds. Tight at the low end, where a healthy API answers (SPEC §8: p95 < 5 ms).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)



class Series:
    """One label set: non-cumulative bucket counts and the sum of observed seconds.

    Updated from the event loop's thread only, without locks: one ``observe`` is a bisection, an
    integer increment and a float addition. The request count is the sum of the buckets.
    """

    __slots__ = ("buckets", "failures", "labels", "total")

    def __init__(self, labels: tuple[str, ...], bounds: int = len(BUCKETS)) -> None:
        self.labels = labels
        self.buckets = [0] * (bounds + 1)
        self.total = 0.0
        self.failures = 0

    def observe(self, seconds: float, _bounds: tuple[float, ...] = BUCKETS) -> None:
        self.buckets[bisect_left(_bounds, seconds)] += 1
        self.total += seconds


class HttpMetrics:
    """``http_requests_total`` and ``http_request_duration_seconds``: one collector, one update per request.

    prometheus-client's own Counter and Histogram take three locks per request (about 0.8 µs); this
    collector exposes the same two families from plain per-series counts.
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, str, int], Series] = {}

    def series(self, route: str, method: str, status: str, generation: int) -> Series:
        """Return the series of one label set, creating it on first use."""
        key = (route, method, status, generation)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = Series((route, method, status, str(generation)))
        return found

    def generations(self) -> set[int]:
        return {key[3] for key in self._series}

    def prune(self, oldest_kept: int) -> list[int]:
        """Drop the series of generations older than ``oldest_kept``; return the generations dropped."""
        dropped = sorted(g for g in self.generations() if g < oldest_kept)
        if dropped:
            self._series = {key: series for key, series in self._series.items() if key[3] >= oldest_kept}
        return dropped

    def describe(self) -> list[Metric]:
        return list(self._families(()))

    def collect(self) -> Iterator[Metric]:
        return self._families(list(self._series.values()))

    def _families(self, series: Iterable[Series]) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "http_requests",
            "HTTP requests answered, by route template, method, status class and kernel generation.",
            labels=LABELS,
        )
        duration = HistogramMetricFamily(
            "http_request_duration_seconds",
            "Time from the request reaching the observability middleware to the end of its response.",
            labels=LABELS,
        )
        bounds = [*(floatToGoString(b) for b in BUCKETS), "+Inf"]  # type: ignore[no-untyped-call]
        for one in series:
            counts = list(one.buckets)
            cumulative = list(accumulate(counts))
            requests.add_metric(one.labels, cumulative[-1])
            duration.add_metric(one.labels, list(zip(bounds, cumulative, strict=True)), one.total)
        yield requests
        yield duration

    def collectors(self) -> list[Any]:
        return [self]


class KernelCollector:
    """Kernel state at scrape time: generation, configuration version, plugins, last refused change."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        return self._families(self._runtime.current)

    def _families(self, kernel: Any = None) -> Iterator[Metric]:
        generation = GaugeMetricFamily("botcriptofy_generation", "The kernel generation serving new requests in this process.")
        version = GaugeMetricFamily("botcriptofy_config_version", "The applied configuration version (0 before the first is recorded).")
        refused = GaugeMetricFamily("botcriptofy_config_refused",
                                    "1 while the last configuration change was refused (the previous one is still served).")
        plugins = GaugeMetricFamily("botcriptofy_plugin_enabled", "1 for each enabled plugin, 0 for a disabled or refused one.",
                                    labels=["plugin", "version"])
        if kernel is not None:
            generation.add_metric([], kernel.generation)
            version.add_metric([], kernel.config_version or 0)
            refused.add_metric([], 1 if self._runtime.last_error else 0)
            for name, info in sorted(self._runtime.plugins.items()):
                plugins.add_metric([name, str(info.version)], 1 if name in kernel.plugins else 0)
        yield from (generation, version, refused, plugins)


class Collectors:
    """Everything the plugin registers in ``kernel.metrics``, created once per runtime."""

    def __init__(self, runtime: Any) -> None:
        self.http = HttpMetrics()
        self.kernel = KernelCollector(runtime)
        self.process = [ProcessCollector(registry=None), PlatformCollector(registry=None)]
        if hasattr(gc, "get_stats"):
            # GCCollector insists on registering itself somewhere: give it a private registry.
            self.process.append(GCCollector(registry=CollectorRegistry()))

    def all(self) -> list[Any]:
        return [*self.http.collectors(), self.kernel, *self.process]
