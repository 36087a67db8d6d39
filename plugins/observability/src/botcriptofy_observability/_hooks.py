"""Per-plugin hook timing: ``botcriptofy_hook_duration_seconds{plugin, hook}``, and spans for slow hook calls.

Every hook implementation of a generation's plugin manager is wrapped once, when the generation
builds its middleware: the wrapper reads the monotonic clock twice and updates one lock-free series (the
same kind as the request series). Coroutine implementations are timed until they finish. A call at
least ``tracing_slow_hook_ms`` long, while tracing is on, is recorded afterwards as a span
``hook <hook> <plugin>`` under the current span, with its real start and end times.
"""

from __future__ import annotations

import functools
import inspect
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from time import perf_counter, time_ns
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from ._metrics import Series
from ._tracing import Tracing

HOOK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BOUNDS = [*(floatToGoString(b) for b in HOOK_BUCKETS), "+Inf"]  # type: ignore[no-untyped-call]
DURATION = "botcriptofy_hook_duration_seconds"
TIMED = "__botcriptofy_timed__"


class HookMetrics:
    """The hook timing collector: one series per (plugin, hook)."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], Series] = {}
        # Each series' histogram samples as last built, with the sum they were built at: most hooks run
        # at generation builds only, so most series are unchanged from one collection to the next.
        self._built: dict[tuple[str, ...], tuple[tuple[float, int], list[Sample]]] = {}

    def series(self, plugin: str, hook: str) -> Series:
        found = self._series.get((plugin, hook))
        if found is None:
            found = self._series[(plugin, hook)] = Series((plugin, hook), len(HOOK_BUCKETS))
        return found

    def describe(self) -> list[Metric]:
        return list(self._families([]))

    def collect(self) -> Iterator[Metric]:
        return self._families(list(self._series.values()))

    def _families(self, series: list[Series]) -> Iterator[Metric]:
        duration = HistogramMetricFamily(
            DURATION,
            "Time spent in one plugin's implementation of one hook (coroutines until they finish).",
            labels=["plugin", "hook"],
        )
        failures = CounterMetricFamily(
            "botcriptofy_hook_failures", "Hook implementation calls that raised, by plugin and hook.", labels=["plugin", "hook"]
        )
        for one in series:
            duration.samples.extend(self._duration_samples(one))
            failures.add_metric(one.labels, one.failures)
        yield duration
        yield failures

    def _duration_samples(self, one: Series) -> list[Sample]:
        """``one``'s histogram samples, built again only when it has observed something since the last build."""
        state = (one.total, sum(one.buckets))
        built = self._built.get(one.labels)
        if built is not None and built[0] == state:
            return built[1]
        family = HistogramMetricFamily(DURATION, "", labels=["plugin", "hook"])
        family.add_metric(one.labels, list(zip(BOUNDS, accumulate(one.buckets), strict=True)), one.total)
        self._built[one.labels] = (state, family.samples)
        return family.samples


def _record(series: Series, tracing: Tracing, hook: str, plugin: str, elapsed: float, failed: bool) -> None:
    series.buckets[bisect_left(HOOK_BUCKETS, elapsed)] += 1
    series.total += elapsed
    if failed:
        series.failures += 1
    if tracing.enabled and elapsed >= tracing.slow_hook_seconds:
        # The wall-clock start is derived from the end: one clock read less on every call of every hook.
        elapsed_ns = int(elapsed * 1e9)
        started_ns = time_ns() - elapsed_ns
        span = tracing.tracer.start_span(
            f"hook {hook} {plugin}", start_time=started_ns, attributes={"botcriptofy.plugin": plugin, "botcriptofy.hook": hook}
        )
        span.end(end_time=started_ns + elapsed_ns)


def _timed(function: Any, series: Series, tracing: Tracing, hook: str, plugin: str) -> Any:
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
            started = perf_counter()
            try:
                result = await function(*args, **kwargs)
            except BaseException:
                _record(series, tracing, hook, plugin, perf_counter() - started, True)
                raise
            _record(series, tracing, hook, plugin, perf_counter() - started, False)
            return result

        wrapper: Any = timed_coroutine
    else:

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = perf_counter()
            try:
                result = function(*args, **kwargs)
            except BaseException:
                _record(series, tracing, hook, plugin, perf_counter() - started, True)
                raise
            _record(series, tracing, hook, plugin, perf_counter() - started, False)
            return result

        wrapper = timed
    setattr(wrapper, TIMED, True)
    return wrapper


def time_hooks(manager: Any, metrics: HookMetrics, tracing: Tracing) -> int:
    """Wrap every plain hook implementation of ``manager`` not wrapped yet; return how many were wrapped."""
    wrapped = 0
    for caller in _callers(manager):
        for impl in caller.get_hookimpls():
            if impl.hookwrapper or impl.wrapper or getattr(impl.function, TIMED, False):
                continue
            impl.function = _timed(impl.function, metrics.series(impl.plugin_name, caller.name), tracing, caller.name, impl.plugin_name)
            wrapped += 1
    return wrapped


def _callers(manager: Any) -> list[Any]:
    return [caller for name, caller in vars(manager.hook).items() if not name.startswith("_") and hasattr(caller, "get_hookimpls")]
