"""Connection-level failures become ``botcriptofy.ServiceUnavailable`` (503 with Retry-After) at the session boundary.

Only failures that say nothing about the request itself are translated: the pool had no free
connection within ``pool_timeout``, the server refused, dropped or did not answer a connection,
or it is shutting down, starting or full. A constraint violation or a bad statement stays what it
is. Every translation is counted by reason and exported as ``botcriptofy_storage_unavailable_total``.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterator
from typing import Any

from sqlalchemy import exc

from botcriptofy import ServiceUnavailable

POOL_TIMEOUT = "pool_timeout"
CONNECTION_LOST = "connection_lost"
UNREACHABLE = "unreachable"

# SQLSTATEs of a server that cannot take the work now: connection exceptions (class 08), shutting down or
# starting (57P01-57P03), too many connections (53300).
_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")


def _sqlstate(error: BaseException | None) -> str:
    seen = 0
    while error is not None and seen < 4:
        state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if isinstance(state, str) and state:
            return state
        error = error.__cause__
        seen += 1
    return ""


class DatabaseUnreachable(ConnectionError):
    """A new connection could not be opened: refused, timed out, or the server is starting, stopping or full.

    Raised by the engine's connect step only, so that an ``OSError`` of the caller's own code inside a
    session is never mistaken for an unreachable database.
    """


def is_unreachable(error: BaseException) -> bool:
    """Whether a failure to connect means the server cannot take connections now (rather than bad credentials or a bad URL)."""
    return isinstance(error, OSError | TimeoutError) or _sqlstate(error).startswith(_UNAVAILABLE_STATES)


def reason_of(error: BaseException) -> str | None:
    """Why ``error`` means the database cannot serve right now (a reason label), or None when it is another failure."""
    if isinstance(error, exc.TimeoutError):  # only the pool raises it: no free connection within pool_timeout
        return POOL_TIMEOUT
    if isinstance(error, DatabaseUnreachable):
        return UNREACHABLE
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return CONNECTION_LOST
        if _sqlstate(error.orig).startswith(_UNAVAILABLE_STATES):
            return UNREACHABLE
    return None


_DETAILS = {
    POOL_TIMEOUT: "Every database connection is busy; nothing was written. Retry after the delay given in Retry-After.",
    CONNECTION_LOST: "The connection to the database was lost; the unit of work was not committed. Retry after the delay "
    "given in Retry-After.",
    UNREACHABLE: "The database is unreachable; nothing was written. Retry after the delay given in Retry-After.",
}


def unavailable(reason: str, retry_after: float) -> ServiceUnavailable:
    return ServiceUnavailable(_DETAILS[reason], retry_after=retry_after, dependency="database")


class UnavailableStats:
    """How many units of work were answered with ServiceUnavailable, by reason (kept across plugin restarts)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        # Events not fanned out yet plus deliveries waiting (retries included); None until the relay counted.
        self.outbox_backlog: int | None = None

    def count(self, reason: str) -> None:
        self.counts[reason] += 1


class UnavailableCollector:
    """Prometheus collector: ``botcriptofy_storage_unavailable_total{reason}``."""

    def __init__(self, stats: UnavailableStats) -> None:
        self.stats = stats

    def describe(self) -> Iterator[Any]:
        return iter([self._family(), self._backlog()])

    def collect(self) -> Iterator[Any]:
        family = self._family()
        for reason in (POOL_TIMEOUT, CONNECTION_LOST, UNREACHABLE):
            family.add_metric([reason], self.stats.counts[reason])
        yield family
        backlog = self._backlog()
        if self.stats.outbox_backlog is not None:
            backlog.add_metric([], self.stats.outbox_backlog)
        yield backlog

    @staticmethod
    def _backlog() -> Any:
        from prometheus_client.core import GaugeMetricFamily

        return GaugeMetricFamily(
            "botcriptofy_outbox_backlog",
            "Outbox events not fanned out yet plus deliveries waiting (retries included), counted by the relay every few seconds.",
        )

    @staticmethod
    def _family() -> Any:
        from prometheus_client.core import CounterMetricFamily

        return CounterMetricFamily(
            "botcriptofy_storage_unavailable",
            "Units of work answered 503 because the database could not serve them, by reason.",
            labels=["reason"],
        )


_by_runtime: weakref.WeakKeyDictionary[Any, UnavailableStats] = weakref.WeakKeyDictionary()


def stats_for(runtime: Any) -> UnavailableStats:
    """The counters of one runtime: they outlive restarts of the plugin, as the kernel keeps the collector registered."""
    stats = _by_runtime.get(runtime)
    if stats is None:
        stats = _by_runtime[runtime] = UnavailableStats()
    return stats
