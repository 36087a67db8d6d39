"""BotCriptoFy observability plugin: ``GET /metrics``, per-route request metrics, JSON logs, slow-request logs.

Hook implementations only; the logic lives in the ``_*`` modules.
"""

from __future__ import annotations

from typing import Any

from botcriptofy import Kernel, Middleware, Route, SettingsSchema, StashKey, hookimpl

from ._endpoint import metrics
from ._logging import SETUP, JsonFormatter
from ._metrics import Collectors
from ._middleware import RequestMetricsMiddleware
from ._settings import LIVE_KEYS, ObservabilitySettings

__all__ = [
    "JsonFormatter",
    "ObservabilitySettings",
    "RequestMetricsMiddleware",
    "plugin_settings_schema",
    "register_metrics",
    "register_middleware",
    "register_routes",
    "settings_changed",
    "shutdown",
    "startup",
]

NAME = "observability"
MIDDLEWARE_PRIORITY = 100
COLLECTORS: StashKey[Collectors] = StashKey("observability.collectors")
LOG_OWNER: StashKey[object] = StashKey("observability.log_owner")


def _collectors(kernel: Kernel) -> Collectors:
    # The stash is inherited by every later generation, so one set of collectors serves them all,
    # and survives the plugin being disabled and enabled again (the kernel re-registers it then).
    found = kernel.stash.get(COLLECTORS, None)
    if found is None:
        found = kernel.stash[COLLECTORS] = Collectors(kernel.runtime)
    return found


def _settings(kernel: Kernel) -> ObservabilitySettings:
    settings = kernel.settings_for(NAME)
    return settings if isinstance(settings, ObservabilitySettings) else ObservabilitySettings()


def _apply_logging(kernel: Kernel, settings: ObservabilitySettings) -> None:
    SETUP.apply(kernel.stash[LOG_OWNER], json_logs=settings.json_logs, level=settings.level_number)


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SettingsSchema(model=ObservabilitySettings, live=LIVE_KEYS)


@hookimpl
def startup(kernel: Kernel) -> None:
    _collectors(kernel)
    kernel.stash[LOG_OWNER] = object()
    _apply_logging(kernel, _settings(kernel))


@hookimpl
def settings_changed(kernel: Kernel, previous: Any, current: Any, changed: frozenset[str]) -> None:
    if changed & {"json_logs", "log_level"}:
        _apply_logging(kernel, current)


@hookimpl
def shutdown(kernel: Kernel) -> None:
    SETUP.release(kernel.stash.get(LOG_OWNER, None))


@hookimpl
def register_metrics(kernel: Kernel) -> list[Any]:
    return _collectors(kernel).all()


@hookimpl
def register_routes(kernel: Kernel) -> list[Any]:
    return [Route("/metrics", metrics, include_in_schema=False)]


@hookimpl
def register_middleware(kernel: Kernel) -> list[Middleware]:
    settings = _settings(kernel)
    collectors = _collectors(kernel)
    collectors.http.prune(kernel.generation - settings.generations_kept + 1)
    return [
        Middleware(RequestMetricsMiddleware, http=collectors.http, generation=kernel.generation,
                   slow_request_ms=settings.slow_request_ms, priority=MIDDLEWARE_PRIORITY),
    ]
