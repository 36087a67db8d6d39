"""Tracing with the OpenTelemetry SDK: OTLP/HTTP export, live sampling, HTTP, SQL, Redis and httpx spans.

One :class:`Tracing` exists per process (kept in the kernel stash, which every generation
inherits). Its tracer provider is private to the plugin (the global provider is left alone); the
SQL, Redis and httpx spans use it too. Every setting is live: the sampler and the exporter are
swapped in place, and ``tracing_endpoint = ""`` turns tracing off (the middleware then passes
requests through untouched and the instrumentations are removed).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._middleware import UNMATCHED, template_of

log = logging.getLogger("botcriptofy.observability")

PROPAGATOR = TraceContextTextMapPropagator()
PROBLEM_JSON = b"application/problem+json"


def trace_id_of_current() -> str | None:
    """The current span's trace id as 32 hex digits, or ``None`` outside a trace."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def traceparent_of(span: trace.Span) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


class LiveSampler(Sampler):
    """Parent-based sampling of a ratio of new traces; the ratio can change while spans are made."""

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self._inner: Sampler = ParentBased(TraceIdRatioBased(ratio))

    def set_ratio(self, ratio: float) -> None:
        if ratio != self.ratio:
            self.ratio = ratio
            self._inner = ParentBased(TraceIdRatioBased(ratio))

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Any] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        return self._inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"LiveSampler({self._inner.get_description()})"


class SwappableExport(SpanProcessor):
    """A batch processor over an OTLP/HTTP exporter, replaced when the endpoint or the headers change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batch: BatchSpanProcessor | None = None
        self._key: tuple[str, tuple[tuple[str, str], ...], float] | None = None

    def configure(self, endpoint: str, headers: Mapping[str, str], delay_ms: float) -> None:
        key = (endpoint, tuple(sorted(headers.items())), delay_ms)
        if key == self._key:
            return
        old = self._batch
        batch = None
        if endpoint:
            exporter = OTLPSpanExporter(endpoint=endpoint, headers=dict(headers), timeout=10)
            batch = BatchSpanProcessor(exporter, schedule_delay_millis=delay_ms)
        with self._lock:
            self._batch, self._key = batch, key
        if old is not None:
            # Flushes what the old exporter still held, off the event loop (the collector may be slow).
            threading.Thread(target=old.shutdown, name="botcriptofy-otlp-retire", daemon=True).start()

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        batch = self._batch
        if batch is not None:
            batch.on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        batch = self._batch
        return batch.force_flush(timeout_millis) if batch is not None else True

    def shutdown(self) -> None:
        with self._lock:
            batch, self._batch, self._key = self._batch, None, None
        if batch is not None:
            batch.shutdown()


class _ActiveTracer(trace.Tracer):
    """The tracer the process-wide instrumentations hold: it forwards to the tracing enabled last.

    The Redis and httpx instrumentations patch classes once per process and keep the tracer they
    were given; several runtimes (tests) or a tracing turned off and on again must not leave them
    writing to a provider that is gone.
    """

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        active = _active()
        return active.tracer.start_span(*args, **kwargs) if active is not None else trace.INVALID_SPAN

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        active = _active()
        tracer = active.tracer if active is not None else trace.NoOpTracer()
        return tracer.start_as_current_span(*args, **kwargs)


class _ActiveProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _ActiveTracer()


_ENABLED: list[Tracing] = []
_LOCK = threading.Lock()


def _active() -> Tracing | None:
    return _ENABLED[-1] if _ENABLED else None


def _enable(tracing: Tracing) -> None:
    with _LOCK:
        if tracing in _ENABLED:
            return
        first = not _ENABLED
        _ENABLED.append(tracing)
    if first:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        RedisInstrumentor().instrument(tracer_provider=_ActiveProvider())
        HTTPXClientInstrumentor().instrument(tracer_provider=_ActiveProvider())
        event.listen(Engine, "before_cursor_execute", _sql_before)
        event.listen(Engine, "after_cursor_execute", _sql_after)
        event.listen(Engine, "handle_error", _sql_error)


def _disable(tracing: Tracing) -> None:
    with _LOCK:
        if tracing not in _ENABLED:
            return
        _ENABLED.remove(tracing)
        last = not _ENABLED
    if last:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        RedisInstrumentor().uninstrument()
        HTTPXClientInstrumentor().uninstrument()
        event.remove(Engine, "before_cursor_execute", _sql_before)
        event.remove(Engine, "after_cursor_execute", _sql_after)
        event.remove(Engine, "handle_error", _sql_error)


# -- SQL: client spans around every SQLAlchemy cursor execution (every engine, made before or after) --


def _sql_before(conn: Any, cursor: Any, statement: str, parameters: Any, ctx: Any, executemany: bool) -> None:
    active = _active()
    if ctx is None or active is None:
        return
    operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
    database = conn.engine.url.database or ""
    span = active.tracer.start_span(
        f"{operation} {database}".strip(),
        kind=SpanKind.CLIENT,
        attributes={"db.system.name": conn.engine.dialect.name, "db.namespace": database, "db.query.text": statement[:2000],
                    "db.operation.name": operation},
    )
    ctx._botcriptofy_span = span


def _sql_after(conn: Any, cursor: Any, statement: str, parameters: Any, ctx: Any, executemany: bool) -> None:
    span = getattr(ctx, "_botcriptofy_span", None)
    if span is not None:
        span.end()
        ctx._botcriptofy_span = None


def _sql_error(exception_context: Any) -> None:
    ctx = exception_context.execution_context
    span = getattr(ctx, "_botcriptofy_span", None)
    if span is not None:
        span.set_status(Status(StatusCode.ERROR, type(exception_context.original_exception).__name__))
        span.end()
        ctx._botcriptofy_span = None


class Tracing:
    """The runtime's tracer provider, sampler and exporter; the process-wide instrumentations follow it while enabled."""

    def __init__(self, service_name: str = "botcriptofy") -> None:
        self.sampler = LiveSampler(1.0)
        self.export = SwappableExport()
        self.provider = TracerProvider(sampler=self.sampler, resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(self.export)
        self.tracer = self.provider.get_tracer("botcriptofy")
        self.enabled = False
        self.users = 0
        self.slow_hook_seconds = 0.0

    def apply(self, settings: Any) -> None:
        self.sampler.set_ratio(settings.tracing_sampling_ratio)
        self.export.configure(settings.tracing_endpoint, settings.tracing_headers, settings.tracing_export_delay_ms)
        self.slow_hook_seconds = settings.tracing_slow_hook_ms / 1000.0
        self.enabled = bool(settings.tracing_endpoint)
        if self.enabled:
            _enable(self)
        else:
            _disable(self)

    def close(self) -> None:
        self.enabled = False
        _disable(self)
        self.export.shutdown()


def event_metadata(tracing: Tracing) -> dict[str, str] | None:
    """The publisher's trace context (``traceparent``), carried with the event through the outbox."""
    if not tracing.enabled:
        return None
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return carrier or None


def event_delivery(tracing: Tracing, envelope: Any, handler: Any) -> Any:
    """A consumer span around one handler's delivery, child of the publisher's span when it was carried."""
    if not tracing.enabled:
        return None
    parent = PROPAGATOR.extract(dict(envelope.metadata or {}))
    return tracing.tracer.start_as_current_span(
        f"event {envelope.type} {handler.name}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "botcriptofy", "messaging.operation.type": "process",
                    "messaging.message.id": envelope.id, "messaging.destination.name": envelope.type,
                    "botcriptofy.handler": handler.name, "botcriptofy.attempt": envelope.attempt},
    )


class TracingMiddleware:
    """A server span per HTTP request: ``traceparent`` honoured and returned, trace id in problem+json bodies."""

    def __init__(self, app: ASGIApp, *, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.tracing.enabled:
            await self.app(scope, receive, send)
            return
        carrier = {}
        for name, value in scope.get("headers", ()):
            if name in (b"traceparent", b"tracestate"):
                carrier[name.decode("latin-1")] = value.decode("latin-1")
        parent = PROPAGATOR.extract(carrier)
        method = scope["method"]
        span = self.tracing.tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope.get("path", ""), "url.scheme": scope.get("scheme", "http")},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        returned = traceparent_of(span).encode("latin-1")
        trace_id = format(span.get_span_context().trace_id, "032x")
        status = 0
        held: Message | None = None
        body = bytearray()

        async def send_traced(message: Message) -> None:
            nonlocal status, held
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"traceparent"]
                message = {**message, "headers": [*headers, (b"traceparent", returned)]}
                if any(k.lower() == b"content-type" and v.startswith(PROBLEM_JSON) for k, v in headers):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                start, held = held, None
                content = _with_trace_id(bytes(body), trace_id)
                start = {**start, "headers": [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                         + [(b"content-length", str(len(content)).encode())]}
                await send(start)
                await send({"type": "http.response.body", "body": content, "more_body": False})
                return
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        except BaseException as error:
            span.record_exception(error)
            status = status or 500
            raise
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None)
            template = template_of(path) if isinstance(path, str) else UNMATCHED
            if route is not None:
                span.update_name(f"{method} {template}")
                span.set_attribute("http.route", template)
            span.set_attribute("http.response.status_code", status or 500)
            if (status or 500) >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
            otel_context.detach(token)


def _with_trace_id(content: bytes, trace_id: str) -> bytes:
    try:
        data = json.loads(content)
    except ValueError:
        return content
    if isinstance(data, dict):
        data.setdefault("trace_id", trace_id)
        return json.dumps(data, separators=(",", ":")).encode()
    return content
