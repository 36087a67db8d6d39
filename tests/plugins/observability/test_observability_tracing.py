"""Tracing: spans exported over OTLP/HTTP to a local receiver that decodes the protobuf payloads.

One request touching PostgreSQL, Redis and an outbound HTTP call gives one span tree under the
caller's ``traceparent``; the trace id comes back in the response, in problem+json bodies and in
JSON log lines; sampling and the endpoint change live.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import ClassVar

import httpx
import pytest
import redis.asyncio as aioredis
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import botcriptofy_observability as observability
import botcriptofy_storage
from botcriptofy import Event, EventHandler, ProblemError, Route, hookimpl, kernel_of
from botcriptofy.testing import wait_until
from botcriptofy_observability._tracing import trace_id_of_current

from .conftest import flush

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


def sampled(traceparent: str) -> bool:
    return bool(int(traceparent.split("-")[3], 16) & 1)


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    logger = logging.getLogger("test.tracing")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield buffer
    logger.removeHandler(handler)
    logger.propagate = True


class Touching:
    """A route that queries the database, sets and reads a Redis key, calls out over HTTP and logs."""

    def __init__(self, database_url: str, redis_url: str, prefix: str, outbound: str) -> None:
        self.engine = create_async_engine(database_url.replace("postgresql://", "postgresql+asyncpg://", 1))
        self.redis = aioredis.Redis.from_url(redis_url)
        self.prefix = prefix
        self.outbound = outbound

    @hookimpl
    def register_routes(self, kernel):
        async def touch(request):
            async with self.engine.connect() as connection:
                value = (await connection.execute(text("SELECT 41 + 1"))).scalar_one()
            await self.redis.set(f"{self.prefix}traced", str(value))
            stored = await self.redis.get(f"{self.prefix}traced")
            async with httpx.AsyncClient() as client:
                echoed = (await client.get(self.outbound)).json()["hello"]
            logging.getLogger("test.tracing").info("touched")
            return {"value": int(stored), "outbound_traceparent": echoed}

        async def refuse(request):
            raise ProblemError(422, "Refused", "Always refused.")

        return [Route("/v1/touch", touch), Route("/v1/refuse", refuse)]

    async def close(self) -> None:
        await self.engine.dispose()
        await self.redis.aclose()


async def test_one_request_touching_database_and_redis_gives_one_span_tree(
    receiver, kernel_harness, postgres_url, redis_url, redis_prefix, json_stream
):
    touching = Touching(postgres_url, redis_url, redis_prefix, f"http://127.0.0.1:{receiver.port}/hello")
    harness = await kernel_harness(
        plugins={"observability": observability, "touching": touching},
        settings={"observability": {"json_logs": True, "tracing_endpoint": receiver.endpoint,
                                    "tracing_headers": {"x-collector-token": "s3cret"}}},
    )
    try:
        with suppress_http_instrumentation():  # the test client's own call is not part of the tree
            response = await harness.client.get(
                "/v1/touch", headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"}
            )
        assert response.status_code == 200, response.text
        assert response.json()["value"] == 42
        returned = response.headers["traceparent"]
        assert returned.startswith(f"00-{PARENT_TRACE}-") and sampled(returned)
        server_span_id = returned.split("-")[2]
        # The outbound call carried the trace on, under a client span of its own.
        outbound = response.json()["outbound_traceparent"]
        assert outbound.startswith(f"00-{PARENT_TRACE}-") and outbound.split("-")[2] != server_span_id

        await flush(harness)
        await wait_until(lambda: len(receiver.of_trace(PARENT_TRACE)) >= 5, timeout=10)
        spans = receiver.of_trace(PARENT_TRACE)
        by_id = {span.span_id.hex(): span for span in spans}
        server = by_id[server_span_id]
        assert server.kind == ProtoSpan.SPAN_KIND_SERVER
        assert server.name == "GET /v1/touch"
        assert server.parent_span_id.hex() == PARENT_SPAN
        children = [span for span in spans if span.parent_span_id.hex() == server_span_id]
        names = sorted(span.name for span in children)
        assert any(name.startswith("SELECT") for name in names), names
        assert "SET" in names and "GET" in names, names
        assert any(span.kind == ProtoSpan.SPAN_KIND_CLIENT and span.name == "GET" and
                   any(a.key == "url.full" or a.key == "http.url" for a in span.attributes) for span in children), names
        sql = next(span for span in children if span.name.startswith("SELECT"))
        attributes = {a.key: a.value.string_value for a in sql.attributes}
        assert attributes["db.system.name"] == "postgresql"
        assert attributes["db.query.text"] == "SELECT 41 + 1"
        assert all(span.trace_id.hex() == PARENT_TRACE for span in children)
        assert receiver.headers[-1]["x-collector-token"] == "s3cret"

        # The trace id is in the JSON log line written while serving.
        lines = [json.loads(line) for line in json_stream.getvalue().splitlines() if line.startswith("{")]
        touched = next(line for line in lines if line["message"] == "touched")
        assert touched["trace_id"] == PARENT_TRACE

        # ... and in a problem+json body.
        refused = await harness.client.get("/v1/refuse", headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"})
        assert refused.status_code == 422
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["trace_id"] == PARENT_TRACE
        assert refused.json()["title"] == "Refused"
    finally:
        await touching.close()


async def test_sampling_is_parent_based_and_live(receiver, kernel_harness):
    harness = await kernel_harness(
        plugins={"observability": observability},
        settings={"observability": {"tracing_endpoint": receiver.endpoint, "tracing_sampling_ratio": 0.0}},
    )
    with suppress_http_instrumentation():
        # Ratio 0: a new trace is not exported, but its id is still returned, marked unsampled.
        fresh = await harness.client.get("/-/health")
        assert not sampled(fresh.headers["traceparent"])
        # A sampled parent wins over the ratio.
        parent_trace = "0af7651916cd43dd8448eb211c80319c"
        child = await harness.client.get("/-/health", headers={"traceparent": f"00-{parent_trace}-b7ad6b7169203331-01"})
        assert sampled(child.headers["traceparent"])
    await flush(harness)
    await wait_until(lambda: receiver.of_trace(parent_trace), timeout=10)
    assert receiver.of_trace(fresh.headers["traceparent"].split("-")[1]) == []

    # Live: ratio 1 samples new traces without a restart.
    result = await harness.apply({"observability": {"tracing_endpoint": receiver.endpoint, "tracing_sampling_ratio": 1.0}})
    assert result.applied
    with suppress_http_instrumentation():
        now = await harness.client.get("/-/health")
    assert sampled(now.headers["traceparent"])
    await flush(harness)
    await wait_until(lambda: receiver.of_trace(now.headers["traceparent"].split("-")[1]), timeout=10)

    # Live: an empty endpoint turns tracing off (no traceparent answered, nothing exported).
    await harness.apply({"observability": {"tracing_endpoint": ""}})
    with suppress_http_instrumentation():
        off = await harness.client.get("/-/health")
    assert "traceparent" not in off.headers


async def test_an_endpoint_that_is_not_http_is_refused(kernel_harness):
    harness = await kernel_harness(plugins={"observability": observability})
    result = await harness.apply({"observability": {"tracing_endpoint": "collector:4318"}})
    assert not result.applied
    await asyncio.sleep(0)


class Pinged(Event):
    event_type: ClassVar[str] = "test.tracing_pinged"

    n: int


class Publisher:
    """A route that publishes an event through the outbox, and a handler of that event."""

    def __init__(self) -> None:
        self.handled: list[str | None] = []

    @hookimpl
    def register_routes(self, kernel):
        async def ping(request):
            envelope = await kernel_of(request).events.publish(Pinged(n=1))
            return {"event": envelope.id, "metadata": envelope.metadata}

        return [Route("/v1/ping", ping, methods=["POST"])]

    @hookimpl
    def register_event_handlers(self, kernel):
        def handle(envelope):
            self.handled.append(trace_id_of_current())

        return [EventHandler("publisher.pinged", handle, events=(Pinged,))]


async def test_an_event_is_traced_from_publish_through_the_outbox_to_its_handler(receiver, kernel_harness, postgres_url):
    publisher = Publisher()
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "observability": observability, "publisher": publisher},
        settings={"storage": {"url": postgres_url, "relay_poll_interval": 0.05},
                  "observability": {"tracing_endpoint": receiver.endpoint}},
    )
    with suppress_http_instrumentation():
        response = await harness.client.post("/v1/ping", headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"})
    assert response.status_code == 200, response.text
    server_span_id = response.headers["traceparent"].split("-")[2]
    # The envelope carries the publisher's context; the storage plugin keeps it in the outbox row.
    assert response.json()["metadata"]["traceparent"].startswith(f"00-{PARENT_TRACE}-")
    await wait_until(lambda: publisher.handled, timeout=10)
    assert publisher.handled == [PARENT_TRACE]  # the handler ran inside the trace
    await flush(harness)
    name = "event test.tracing_pinged publisher.pinged"
    await wait_until(lambda: any(span.name == name for span in receiver.of_trace(PARENT_TRACE)), timeout=10)
    spans = receiver.of_trace(PARENT_TRACE)
    by_id = {span.span_id.hex(): span for span in spans}
    consumer = next(span for span in spans if span.name == name)
    assert consumer.kind == ProtoSpan.SPAN_KIND_CONSUMER
    # Its parent is the span current when the event was published: the request's or one of its children.
    parent = by_id[consumer.parent_span_id.hex()]
    assert parent.span_id.hex() == server_span_id or parent.parent_span_id.hex() == server_span_id
