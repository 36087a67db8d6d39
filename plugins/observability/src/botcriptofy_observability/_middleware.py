"""The request-metrics middleware: a pure ASGI middleware, one instance per kernel generation.

Per request it reads the clock twice, takes the status from the kernel's edge (``response_status``;
it wraps ``send`` only outside a botcriptofy runtime), and after the response
looks up the series of (matched route, method, status) in a dict of bound ``inc``/``observe``
methods. Route templates are resolved once per route and generation, never per request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from time import perf_counter
from typing import Any

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from botcriptofy import response_status

from ._metrics import HttpMetrics, Series

log = logging.getLogger("botcriptofy.observability")

UNMATCHED = "<unmatched>"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_CONVERTOR = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*):[a-zA-Z_]+}")
_MAX_CACHED = 4096


def template_of(path: str) -> str:
    """``/v1/items/{id:int}`` -> ``/v1/items/{id}``."""
    return _CONVERTOR.sub(r"{\1}", path)


def route_templates(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[int, str]]:
    """Yield ``(id(route), full path template)`` for every route, descending into mounts."""
    for route in routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            continue
        if isinstance(route, Mount):
            # The mount itself is the matched route when it serves a plain ASGI app.
            yield id(route), template_of(prefix + path) + "/{path}"
            yield from route_templates(route.routes, prefix + path)
        else:
            yield id(route), template_of(prefix + path)


class RequestMetricsMiddleware:
    """Count requests and time them by route template, method, status class and generation."""

    def __init__(self, app: ASGIApp, *, http: HttpMetrics, generation: int, slow_request_ms: float = 0.0) -> None:
        self.app = app
        self.http = http
        self.generation = generation
        self.slow_seconds = slow_request_ms / 1000.0
        self._series: dict[tuple[int, str, int], Series] = {}
        self._templates: dict[int, str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        started = perf_counter()
        if response_status(scope) is not None:  # behind the kernel's edge, which records the status: send is not wrapped
            try:
                await self.app(scope, receive, send)
            finally:
                self._observe(scope, response_status(scope) or 0, perf_counter() - started)
            return

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self._observe(scope, status, perf_counter() - started)

    def _observe(self, scope: Scope, status: int, elapsed: float) -> None:
        route = scope.get("route")
        key = (id(route), scope["method"], status)
        series = self._series.get(key)
        if series is None:
            series = self._resolve(key, route, scope)
        series.observe(elapsed)
        if self.slow_seconds and elapsed >= self.slow_seconds:
            self._log_slow(scope, route, status, elapsed)

    def _template(self, route: Any, scope: Scope) -> str:
        if route is None:
            return UNMATCHED
        if self._templates is None:
            app = scope.get("app")
            self._templates = dict(route_templates(getattr(app, "routes", ())))
        found = self._templates.get(id(route))
        if found is None:
            path = getattr(route, "path", None)
            found = template_of(path) if isinstance(path, str) else UNMATCHED
        return found

    def _resolve(self, key: tuple[int, str, int], route: Any, scope: Scope) -> Series:
        method = key[1] if key[1] in METHODS else "OTHER"
        status = key[2]
        # No response started: the server answers 500 (or the client is gone).
        status_class = f"{status // 100}xx" if 100 <= status <= 599 else "5xx"
        series = self.http.series(self._template(route, scope), method, status_class, self.generation)
        if method != "OTHER" and len(self._series) < _MAX_CACHED:
            self._series[key] = series
        return series

    def _log_slow(self, scope: Scope, route: Any, status: int, elapsed: float) -> None:
        template = self._template(route, scope)
        duration_ms = round(elapsed * 1000.0, 1)
        log.warning(
            "slow request: %s %s (%s) answered %s in %.1f ms",
            scope["method"], scope.get("path", ""), template, status or 500, duration_ms,
            extra={"method": scope["method"], "path": scope.get("path", ""), "route": template, "status": status or 500,
                   "duration_ms": duration_ms, "generation": self.generation},
        )
