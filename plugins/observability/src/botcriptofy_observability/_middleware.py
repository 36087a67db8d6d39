"""Request metrics: a response observer of the kernel's edge, one instance per kernel generation.

The edge reads the clock when a request arrives and when it is over, and calls :class:`RequestMetrics`
with the status it recorded: no middleware layer for requests to cross. The observer looks up the
series of (matched route, method, status) in a dict and updates it. Route templates are resolved
once per route and generation, never per request. :class:`RequestMetricsMiddleware` does the same
around an app served without the kernel (it wraps ``send`` to read the status).
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

UNMATCHED = "<unmatched>"  # the router found no route
UNROUTED = "<unrouted>"  # answered before routing: a rate limit, a 503, an idempotent replay
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


class RequestMetrics:
    """Count requests and time them by route template, method, status class and generation.

    Called as ``(scope, status, seconds)`` after each response: by the kernel's edge as a response
    observer (``register_response_observers``, no middleware layer), or by
    :class:`RequestMetricsMiddleware` around a plain Starlette app. A request answered before any
    route was chosen (a rate limit's 429, a 503, an idempotent replay) is labelled ``<unrouted>``;
    one the router found no route for, ``<unmatched>``.
    """

    def __init__(self, *, http: HttpMetrics, generation: int, slow_request_ms: float = 0.0) -> None:
        self.http = http
        self.generation = generation
        self.slow_seconds = slow_request_ms / 1000.0
        self._series: dict[tuple[int, str, int], Series] = {}
        self._templates: dict[int, str] | None = None

    def __call__(self, scope: Scope, status: int, elapsed: float) -> None:
        route = scope.get("route")
        # No route: 1 when the router found none, 0 when none was looked for (never the id of an object).
        key = (id(route) if route is not None else int("router" in scope), scope["method"], status)
        series = self._series.get(key)
        if series is None:
            series = self._resolve(key, route, scope)
        series.observe(elapsed)
        if self.slow_seconds and elapsed >= self.slow_seconds:
            self._log_slow(scope, route, status, elapsed)

    def _template(self, route: Any, scope: Scope) -> str:
        if route is None:
            return UNMATCHED if "router" in scope else UNROUTED
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


class RequestMetricsMiddleware:
    """:class:`RequestMetrics` as a pure ASGI middleware, for an app served without the kernel's edge.

    Behind the edge (which records the status) ``send`` is not wrapped; elsewhere it is, to read the status.
    """

    def __init__(self, app: ASGIApp, *, http: HttpMetrics, generation: int, slow_request_ms: float = 0.0) -> None:
        self.app = app
        self.metrics = RequestMetrics(http=http, generation=generation, slow_request_ms=slow_request_ms)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        started = perf_counter()
        if response_status(scope) is not None:
            try:
                await self.app(scope, receive, send)
            finally:
                self.metrics(scope, response_status(scope) or 0, perf_counter() - started)
            return

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics(scope, status, perf_counter() - started)
