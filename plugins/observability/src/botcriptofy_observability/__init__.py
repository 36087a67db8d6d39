"""BotCriptoFy observability plugin: ``GET /metrics``, per-route request metrics, JSON logs, slow-request logs.

Hook implementations only; the logic lives in the ``_*`` modules.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from botcriptofy import Kernel, Middleware, Route, SettingsSchema, StashKey, hookimpl

from ._cli import register as _register_cli
from ._docs import routes as docs_routes
from ._endpoint import READINESS, metrics
from ._hooks import HookMetrics, time_hooks
from ._logging import SETUP, JsonFormatter
from ._metrics import Collectors
from ._middleware import RequestMetrics, RequestMetricsMiddleware
from ._multiprocess import SnapshotWriter, directory
from ._readiness import Readiness
from ._settings import LIVE_KEYS, ObservabilitySettings
from ._tracing import Tracing, TracingMiddleware
from ._tracing import event_delivery as _event_delivery
from ._tracing import event_metadata as _event_metadata

__all__ = [
    "TRACING",
    "JsonFormatter",
    "ObservabilitySettings",
    "RequestMetrics",
    "RequestMetricsMiddleware",
    "Tracing",
    "TracingMiddleware",
    "event_delivery",
    "event_metadata",
    "plugin_settings_schema",
    "register_commands",
    "register_metrics",
    "register_middleware",
    "register_response_observers",
    "register_routes",
    "settings_changed",
    "shutdown",
    "startup",
]

NAME = "observability"
COLLECTORS: StashKey[Collectors] = StashKey("observability.collectors")
LOG_OWNER: StashKey[object] = StashKey("observability.log_owner")
SNAPSHOTS: StashKey[SnapshotWriter] = StashKey("observability.snapshots")
TRACING: StashKey[Tracing] = StashKey("observability.tracing")
TRACING_PRIORITY = 101
HOOKS: StashKey[HookMetrics] = StashKey("observability.hooks")


def _hook_metrics(kernel: Kernel) -> HookMetrics:
    found = kernel.stash.get(HOOKS, None)
    if found is None:
        found = kernel.stash[HOOKS] = HookMetrics()
    return found


def _tracing(kernel: Kernel) -> Tracing:
    found = kernel.stash.get(TRACING, None)
    if found is None:
        found = kernel.stash[TRACING] = Tracing()
    return found


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
async def startup(kernel: Kernel) -> None:
    _collectors(kernel)
    kernel.stash[LOG_OWNER] = object()
    settings = _settings(kernel)
    _apply_logging(kernel, settings)
    tracing = _tracing(kernel)
    tracing.apply(settings)
    tracing.users += 1
    path = directory()
    if path is not None:
        # A restart starts the new generation before the old one stops: one writer, counted users.
        writer = kernel.stash.get(SNAPSHOTS, None)
        if writer is None:
            writer = kernel.stash[SNAPSHOTS] = SnapshotWriter(kernel.metrics, path, settings.multiprocess_snapshot_seconds)
            writer.start()
        writer.users += 1


@hookimpl
def settings_changed(kernel: Kernel, previous: Any, current: Any, changed: frozenset[str]) -> None:
    if changed & {"json_logs", "log_level"}:
        _apply_logging(kernel, current)
    writer = kernel.stash.get(SNAPSHOTS, None)
    if writer is not None:
        writer.interval = current.multiprocess_snapshot_seconds
    _tracing(kernel).apply(current)


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    SETUP.release(kernel.stash.get(LOG_OWNER, None))
    tracing = kernel.stash.get(TRACING, None)
    if tracing is not None:
        tracing.users -= 1
        if tracing.users <= 0:
            del kernel.stash[TRACING]
            await asyncio.to_thread(tracing.close)  # the last export may wait on the collector
    writer = kernel.stash.get(SNAPSHOTS, None)
    if writer is not None:
        writer.users -= 1
        if writer.users <= 0:
            del kernel.stash[SNAPSHOTS]
            await writer.stop()


@hookimpl
def register_metrics(kernel: Kernel) -> list[Any]:
    readiness = kernel.stash.get(READINESS, None)
    if readiness is None:
        readiness = kernel.stash[READINESS] = Readiness()
    return [*_collectors(kernel).all(), _hook_metrics(kernel), readiness]


@hookimpl
def register_routes(kernel: Kernel) -> list[Any]:
    found = [Route("/metrics", metrics, include_in_schema=False, operations=True)]
    if _settings(kernel).api_docs:
        found += docs_routes()
    return found


@hookimpl
def register_middleware(kernel: Kernel) -> list[Middleware]:
    settings = _settings(kernel)
    collectors = _collectors(kernel)
    collectors.http.prune(kernel.generation - settings.generations_kept + 1)
    if settings.hook_timing:
        time_hooks(kernel.manager, _hook_metrics(kernel), _tracing(kernel))
    if settings.tracing_endpoint:  # without an endpoint tracing is off: no layer that would only pass requests on
        return [Middleware(TracingMiddleware, tracing=_tracing(kernel), priority=TRACING_PRIORITY)]
    return []


@hookimpl
def register_response_observers(kernel: Kernel) -> list[Any]:
    """Request metrics, taken by the kernel's edge after every response (no middleware layer)."""
    settings = _settings(kernel)
    return [RequestMetrics(http=_collectors(kernel).http, generation=kernel.generation, slow_request_ms=settings.slow_request_ms)]


@hookimpl
def register_commands(cli: click.Group) -> None:
    _register_cli(cli)


@hookimpl
def event_metadata(kernel: Kernel, event_type: str) -> dict[str, str] | None:
    tracing = kernel.stash.get(TRACING, None)
    return _event_metadata(tracing) if tracing is not None else None


@hookimpl
def event_delivery(kernel: Kernel, envelope: Any, handler: Any) -> Any:
    tracing = kernel.stash.get(TRACING, None)
    return _event_delivery(tracing, envelope, handler) if tracing is not None else None
