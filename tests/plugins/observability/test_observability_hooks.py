"""Per-plugin hook timing in /metrics, and a span for a hook call slower than the threshold."""

from __future__ import annotations

import asyncio

from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from prometheus_client.parser import text_string_to_metric_families

import botcriptofy_observability as observability
from botcriptofy import HealthCheck, hookimpl
from botcriptofy.testing import wait_until

from .conftest import flush

TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"

FRESH = {"observability": {"metrics_reuse_seconds": 0}}  # every scrape renders: these tests scrape back to back


class Slowpoke:
    """A health check hook that takes 40 ms, and a permissions hook that fails."""

    @hookimpl
    async def health_checks(self, kernel):
        await asyncio.sleep(0.04)
        return [HealthCheck("always", lambda: True)]

    @hookimpl
    def register_staff_commands(self, kernel):
        raise RuntimeError("broken on purpose")


def hook_samples(text: str) -> dict[tuple[str, str, str], float]:
    found: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(("botcriptofy_hook_duration_seconds", "botcriptofy_hook_failures")) and "le" not in sample.labels:
                found[(sample.name, sample.labels["plugin"], sample.labels["hook"])] = sample.value
    return found


async def test_each_plugins_hook_calls_are_timed_and_failures_counted(kernel_harness):
    harness = await kernel_harness(plugins={"observability": observability, "slowpoke": Slowpoke()}, settings=FRESH)
    before = hook_samples((await harness.client.get("/metrics")).text)
    assert (await harness.client.get("/-/ready")).status_code == 200
    assert (await harness.client.get("/-/ready")).status_code == 200
    await harness.kernel.broadcast("register_staff_commands", kernel=harness.kernel)
    after = hook_samples((await harness.client.get("/metrics")).text)

    def delta(name: str, hook: str) -> float:
        return after.get((name, "slowpoke", hook), 0.0) - before.get((name, "slowpoke", hook), 0.0)

    # Two /-/ready calls, and the second scrape refreshing the readiness metrics.
    assert delta("botcriptofy_hook_duration_seconds_count", "health_checks") == 3
    assert delta("botcriptofy_hook_duration_seconds_sum", "health_checks") >= 0.12
    assert delta("botcriptofy_hook_failures_total", "register_staff_commands") == 1
    assert delta("botcriptofy_hook_failures_total", "health_checks") == 0
    # The kernel's own hooks and the other plugins' are there too, each under its plugin's name.
    assert any(plugin == "observability" for (_, plugin, _) in after)


async def test_a_slow_hook_call_is_a_span_under_the_request(receiver, kernel_harness):
    harness = await kernel_harness(
        plugins={"observability": observability, "slowpoke": Slowpoke()},
        settings={"observability": {"tracing_endpoint": receiver.endpoint, "tracing_slow_hook_ms": 20}},
    )
    with suppress_http_instrumentation():
        response = await harness.client.get("/-/ready", headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
    server_span_id = response.headers["traceparent"].split("-")[2]
    await flush(harness)
    await wait_until(lambda: any(span.name.startswith("hook ") for span in receiver.of_trace(TRACE)), timeout=10)
    hooks = [span for span in receiver.of_trace(TRACE) if span.name.startswith("hook ")]
    assert [span.name for span in hooks] == ["hook health_checks slowpoke"]  # the fast ones are not traced
    (span,) = hooks
    assert span.parent_span_id.hex() == server_span_id
    assert span.kind == ProtoSpan.SPAN_KIND_INTERNAL
    assert span.end_time_unix_nano - span.start_time_unix_nano >= 40_000_000


class Flaky:
    """A readiness check that fails while ``down`` is set."""

    def __init__(self) -> None:
        self.down = True

    @hookimpl
    def health_checks(self, kernel):
        def check():
            if self.down:
                raise ConnectionError("peer unreachable")
            return True

        return [HealthCheck("peer", check)]


async def test_readiness_is_a_metric_refreshed_at_each_scrape(kernel_harness):
    flaky = Flaky()
    harness = await kernel_harness(plugins={"observability": observability, "flaky": flaky}, settings=FRESH)

    async def ready() -> tuple[float, float]:
        text = (await harness.client.get("/metrics")).text
        values = {(s.name, s.labels.get("check")): s.value for f in text_string_to_metric_families(text) for s in f.samples}
        return values[("botcriptofy_ready", None)], values[("botcriptofy_readiness_check", "flaky.peer")]

    assert await ready() == (0, 0)
    assert (await harness.client.get("/-/ready")).status_code == 503
    flaky.down = False
    assert await ready() == (1, 1)
