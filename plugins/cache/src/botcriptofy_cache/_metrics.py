"""The Prometheus collector returned from ``register_metrics``: it reads the plain counters when scraped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

if TYPE_CHECKING:
    from ._service import CacheService
    from ._stats import Stats

P = "botcriptofy_cache_"
REJECTION_REASONS = ("bad-signature", "pickle-not-allowed", "unsigned")


class CacheCollector:
    """Per-namespace hits, misses, evictions, latency and write-behind figures, plus Redis availability.

    ``stats`` outlives plugin restarts; ``current`` returns the cache instance now serving (for gauges).
    """

    def __init__(self, stats: Stats, current: Callable[[], CacheService | None]) -> None:
        self.stats = stats
        self.current = current

    def describe(self) -> Iterator[Metric]:
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        stats = self.stats
        hits, misses, evictions, expirations = families["hits"], families["misses"], families["evictions"], families["expirations"]
        for name, ns in sorted(stats.namespaces.items()):
            hits.add_metric([name, "memory"], ns.hits_local)
            hits.add_metric([name, "redis"], ns.hits_redis)
            misses.add_metric([name], ns.misses)
            evictions.add_metric([name], ns.evictions)
            expirations.add_metric([name], ns.expirations)
            families["sets"].add_metric([name], ns.sets)
            families["deletes"].add_metric([name], ns.deletes)
            families["loads"].add_metric([name], ns.loads)
            families["load_errors"].add_metric([name], ns.load_errors)
            families["coalesced"].add_metric([name], ns.coalesced)
            families["lock_waits"].add_metric([name], ns.lock_waits)
            for operation, histogram in (("get", ns.get_latency), ("set", ns.set_latency), ("load", ns.load_latency)):
                if histogram.count:
                    families["latency"].add_metric([name, operation], histogram.cumulative(), histogram.sum)
            if ns.wb_enqueued or ns.wb_flushed or ns.wb_backlog or ns.wb_sync or ns.wb_failures:
                families["wb_enqueued"].add_metric([name], ns.wb_enqueued)
                families["wb_flushed"].add_metric([name], ns.wb_flushed)
                families["wb_failures"].add_metric([name], ns.wb_failures)
                families["wb_dead"].add_metric([name], ns.wb_dead)
                families["wb_backlog"].add_metric([name], ns.wb_backlog)
                families["wb_lag"].add_metric([name], ns.wb_lag)
                for reason, count in sorted(ns.wb_sync.items()):
                    families["wb_sync"].add_metric([name, reason], count)
        for kind, count in sorted(stats.invalidations.items()):
            families["invalidations"].add_metric([kind], count)
        for state, count in sorted(stats.redis_switches.items()):
            families["switches"].add_metric([state], count)
        families["redis_errors"].add_metric([], stats.redis_errors)
        for reason in REJECTION_REASONS:
            families["rejected"].add_metric([reason], stats.rejected.get(reason, 0))
        service = self.current()
        if service is not None:
            families["entries"].add_metric([], service.memory_entries)
            families["redis_up"].add_metric([service.backend], 1.0 if service.redis_available else 0.0)
        return iter(families.values())

    @staticmethod
    def _families() -> dict[str, Any]:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ("namespace",)) -> CounterMetricFamily:
            return CounterMetricFamily(P + name, doc, labels=list(labels))

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ("namespace",)) -> GaugeMetricFamily:
            return GaugeMetricFamily(P + name, doc, labels=list(labels))

        return {
            "hits": counter("hits", "Lookups answered from the cache, by layer.", ("namespace", "layer")),
            "misses": counter("misses", "Lookups the cache could not answer."),
            "evictions": counter("evictions", "In-process entries dropped to stay within memory_max_entries."),
            "expirations": counter("expirations", "In-process entries dropped because their TTL ran out."),
            "sets": counter("sets", "Entries stored."),
            "deletes": counter("deletes", "Entries deleted by key."),
            "loads": counter("loads", "Loader calls made by get_or_set."),
            "load_errors": counter("load_errors", "Loader calls that raised."),
            "coalesced": counter("coalesced", "get_or_set calls that waited for a loader already running in the process."),
            "lock_waits": counter("lock_waits", "Loads that waited for another process holding the key's lock."),
            "latency": HistogramMetricFamily(
                P + "operation_seconds", "Time of cache operations (get includes get_or_set lookups).", labels=["namespace", "operation"]
            ),
            "wb_enqueued": counter("write_behind_enqueued", "Writes acknowledged into the write-behind stream."),
            "wb_flushed": counter("write_behind_flushed", "Write-behind writes persisted by this worker's writer."),
            "wb_failures": counter("write_behind_failures", "Writer calls that raised (retried)."),
            "wb_dead": counter("write_behind_dead_lettered", "Writes moved to the dead-letter stream."),
            "wb_sync": counter(
                "write_behind_synchronous", "Write-behind writes made synchronously instead, by reason.", ("namespace", "reason")
            ),
            "wb_backlog": gauge("write_behind_backlog", "Writes in the stream not yet persisted."),
            "wb_lag": gauge("write_behind_lag_seconds", "Age of the oldest write not yet persisted."),
            "invalidations": counter("invalidations", "Invalidations made (key, tag, tenant) and received from other workers.", ("kind",)),
            "switches": counter("redis_state_changes", "Times Redis went down or came back.", ("state",)),
            "redis_errors": counter("redis_errors", "Redis commands that failed.", ()),
            "rejected": counter(
                "rejected_entries", "Redis entries refused (not loaded): unsigned, bad-signature, pickle-not-allowed.", ("reason",)
            ),
            "entries": gauge("memory_entries", "Entries in the in-process layer.", ()),
            "redis_up": gauge("redis_up", "1 while Redis answers (always 0 for the memory backend).", ("backend",)),
        }
