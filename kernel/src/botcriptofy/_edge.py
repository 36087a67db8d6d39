"""The HTTP edge: security headers, CORS, dependency errors as 503 and client disconnects, around every generation.

The built-in plugin puts :class:`EdgeMiddleware` outside every plugin's middleware. It adds the
security headers (computed once per generation) and the headers inner middleware asked for
(``add_response_headers``) to every response, records its status for ``response_status``, renders problems raised by
middleware without dropping the connection, turns dependency errors into 503 through the
``translate_error`` hook, counts 503s, logs a client that went away mid-request at info level, and
calls the generation's response observers (``register_response_observers``) after each response.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TYPE_CHECKING

from prometheus_client import Counter
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._http import (
    RESPONSE_HEADERS_SCOPE_KEY,
    STATUS_SCOPE_KEY,
    UNAVAILABLE_SCOPE_KEY,
    handle_error,
    log_client_disconnect,
    translate,
)
from ._stash import StashKey
from ._types import Middleware, ResponseObserver

if TYPE_CHECKING:
    from ._kernel import Kernel

log = logging.getLogger("botcriptofy.http")

EDGE_PRIORITY = -1000
CORS_PRIORITY = -900
UNAVAILABLE: StashKey[Counter] = StashKey("botcriptofy.unavailable_counter")
EXPOSED_HEADERS = [
    "Location",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Idempotent-Replayed",
    "WWW-Authenticate",
]


def unavailable_counter(kernel: Kernel) -> Counter:
    """The process's counter of 503 answers by dependency (kept in the stash, so every generation shares it)."""
    found = kernel.stash.get(UNAVAILABLE, None)
    if found is None:
        found = kernel.stash[UNAVAILABLE] = Counter(
            "botcriptofy_http_unavailable",
            "Requests answered 503 Service Unavailable, by the dependency that could not serve them.",
            ["dependency"],
            registry=None,
        )
    return found


def security_headers(kernel: Kernel, *, tls: bool) -> list[tuple[bytes, bytes]]:
    """The headers every response gets, as ASGI header pairs."""
    settings = kernel.kernel_settings
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", settings.referrer_policy.encode("latin-1")),
    ]
    if settings.content_security_policy:
        headers.append((b"content-security-policy", settings.content_security_policy.encode("latin-1")))
    if settings.hsts == "always" or (settings.hsts == "tls" and tls):
        headers.append((b"strict-transport-security", f"max-age={settings.hsts_max_age}; includeSubDomains".encode()))
    return headers


class EdgeMiddleware:
    """The outermost middleware of every generation: security headers, problems from middleware, 503s, disconnects."""

    records_response_status = True  # the status of the response start, in the scope (``response_status``)

    def __init__(self, app: ASGIApp, *, kernel: Kernel) -> None:
        self.app = app
        self.kernel = kernel
        self.plain_headers = security_headers(kernel, tls=False)
        self.tls_headers = security_headers(kernel, tls=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        observers = self.kernel.response_observers
        began = perf_counter() if observers else 0.0
        extra = self.tls_headers if scope.get("scheme") == "https" else self.plain_headers
        started = False
        pending: list[tuple[bytes, bytes]] = []  # headers inner middleware asked for (add_response_headers)
        scope[RESPONSE_HEADERS_SCOPE_KEY] = pending

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                status = scope[STATUS_SCOPE_KEY] = message["status"]
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += pending
                headers += [pair for pair in extra if pair[0] not in present]
                message = {**message, "headers": headers}
                if status == 503:
                    self._count_unavailable(scope)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except ClientDisconnect:
            log_client_disconnect(scope)
        except Exception as error:
            problem = await translate(self.kernel, error)
            if problem is None or started:
                raise
            # The kernel's error handler, so a plugin's render_error applies here as it does to routes.
            response = await handle_error(Request(scope, receive), problem)
            await response(scope, receive, send_with_headers)
        finally:
            if observers:
                self._observe(observers, scope, perf_counter() - began)

    @staticmethod
    def _observe(observers: tuple[ResponseObserver, ...], scope: Scope, elapsed: float) -> None:
        status = scope.get(STATUS_SCOPE_KEY, 0)
        for observer in observers:
            try:
                observer(scope, status, elapsed)
            except Exception:
                log.exception("response observer %r failed", observer)

    def _count_unavailable(self, scope: Scope) -> None:
        counter = self.kernel.stash.get(UNAVAILABLE, None)
        if counter is not None:
            counter.labels(scope.get(UNAVAILABLE_SCOPE_KEY) or "unknown").inc()


def edge_middleware(kernel: Kernel) -> list[Middleware]:
    """The built-in plugin's middleware: the edge, and CORS when ``kernel.cors_origins`` lists origins."""
    settings = kernel.kernel_settings
    middleware = [Middleware(EdgeMiddleware, kernel=kernel, priority=EDGE_PRIORITY)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                allow_credentials=settings.cors_allow_credentials,
                expose_headers=EXPOSED_HEADERS,
                max_age=600,
                priority=CORS_PRIORITY,
            )
        )
    return middleware
