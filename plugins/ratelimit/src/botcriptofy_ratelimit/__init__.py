"""BotCriptoFy rate limits: the hook implementations (the logic lives in the ``_*`` modules).

A global ASGI middleware applies the per-address flood guard, each plan's rate (per-route cost
included) and each tenant's monthly API calls; the ``rate_limiter`` hook gives other plugins
(the auth plugin's login guard) the same limiter. See README.md and docs/ratelimit.md.
"""

from __future__ import annotations

from typing import Any

from botcriptofy import HealthCheck, Kernel, Middleware, RateLimiter, SettingsSchema, hookimpl

from ._backend import MemoryBackend, RedisBackend
from ._events import QuotaThresholdReached, SubjectPenalized
from ._guard import Guard
from ._metrics import metrics_for
from ._middleware import STATE, RateLimitMiddleware, State
from ._policy import Policy
from ._settings import LIVE_KEYS, RateLimitSettings

__version__ = "0.4.1"
NAME = "ratelimit"
MIDDLEWARE_PRIORITY = 10

__all__ = [
    "LIVE_KEYS",
    "MIDDLEWARE_PRIORITY",
    "STATE",
    "QuotaThresholdReached",
    "RateLimitMiddleware",
    "RateLimitSettings",
    "SubjectPenalized",
    "health_checks",
    "plugin_settings_schema",
    "rate_limiter",
    "register_metrics",
    "register_middleware",
    "settings_changed",
    "shutdown",
    "startup",
]


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SettingsSchema(RateLimitSettings, live=LIVE_KEYS, guarded=frozenset({"redis_url"}))


@hookimpl
async def startup(kernel: Kernel) -> None:
    settings: RateLimitSettings = kernel.settings_for(NAME)
    metrics = metrics_for(kernel.runtime)
    backend: MemoryBackend | RedisBackend
    if settings.backend == "redis":
        backend = RedisBackend(settings, metrics)
    else:
        # A restart keeps the in-process counts (a change of backend settings must not reset everyone's limits).
        previous = kernel.stash.get(STATE, None)
        store = previous.backend.store if previous is not None and isinstance(previous.backend, MemoryBackend) else None
        backend = MemoryBackend(store)
    await backend.start()
    kernel.stash[STATE] = State(Policy(settings), backend, metrics, Guard(backend, settings.key_prefix))


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    state = kernel.stash.get(STATE, None)
    if state is not None:
        await state.backend.close()


@hookimpl
def settings_changed(kernel: Kernel, previous: Any, current: RateLimitSettings, changed: frozenset[str]) -> None:
    state = kernel.stash[STATE]
    state.backend.configure(current)
    kernel.stash[STATE] = State(Policy(current), state.backend, state.metrics, state.guard)  # forgets cached refusals


@hookimpl
def register_middleware(kernel: Kernel) -> list[Middleware]:
    return [Middleware(RateLimitMiddleware, priority=MIDDLEWARE_PRIORITY)]


@hookimpl
def rate_limiter(kernel: Kernel) -> RateLimiter | None:
    state = kernel.stash.get(STATE, None)
    return state.guard if state is not None else None


@hookimpl
def health_checks(kernel: Kernel) -> list[HealthCheck]:
    state = kernel.stash.get(STATE, None)
    if state is None or not isinstance(state.backend, RedisBackend):
        return []
    settings: RateLimitSettings = kernel.settings_for(NAME)
    return [HealthCheck("redis", state.backend.ping, timeout=max(1.0, settings.redis_timeout * 3))]


@hookimpl
def register_metrics(kernel: Kernel) -> list[Any]:
    return metrics_for(kernel.runtime).collectors()
