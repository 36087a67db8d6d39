"""Shared fixtures of the observability tests: a local OTLP/HTTP traces receiver."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from pytest_asyncio import fixture as async_fixture

import botcriptofy_observability as observability


class Receiver:
    """An OTLP/HTTP traces receiver: every span of every export, decoded, with the request headers."""

    def __init__(self) -> None:
        self.spans: list[ProtoSpan] = []
        self.headers: list[dict[str, str]] = []
        self.port = 0

    async def traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        self.headers.append(dict(request.headers))
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def hello(self, request: web.Request) -> web.Response:
        return web.json_response({"hello": request.headers.get("traceparent", "")})

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def of_trace(self, trace_id: str) -> list[ProtoSpan]:
        return [span for span in self.spans if span.trace_id.hex() == trace_id]


@async_fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", found.traces)
    app.router.add_get("/hello", found.hello)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        found.port = sock.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", found.port)
    await site.start()
    yield found
    await runner.cleanup()


async def flush(harness) -> None:
    # Off the event loop: the exporter posts to the receiver served by this loop.
    assert await asyncio.to_thread(harness.kernel.stash[observability.TRACING].export.force_flush, 10000)


