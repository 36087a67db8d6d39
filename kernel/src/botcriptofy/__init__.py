"""BotCriptoFy kernel: the public API that plugins import.

Everything a plugin needs is importable from here; modules starting with ``_`` are private.
"""

from ._cli import pass_kernel
from ._errors import BotCriptoFyError, ConfigError, PluginError, ProblemError
from ._events import Envelope, Event, EventBus, EventHandler, Outbox, event_class
from ._http import Route, current_actor, kernel_of, read_body, require
from ._kernel import ApplyResult, Kernel, Runtime
from ._markers import hookimpl, hookspec
from ._settings import KernelSettings, PluginSettings
from ._stash import Stash, StashKey
from ._types import (
    Actor,
    Cache,
    Database,
    DataSubject,
    Entitlements,
    HealthCheck,
    Middleware,
    Migrations,
    Notification,
    QuotaDecision,
    RateLimit,
    RateLimitDecision,
    RateLimiter,
    SettingsSchema,
)
from ._version import __version__

__all__ = [
    "Actor",
    "ApplyResult",
    "BotCriptoFyError",
    "Cache",
    "ConfigError",
    "DataSubject",
    "Database",
    "Entitlements",
    "Envelope",
    "Event",
    "EventBus",
    "EventHandler",
    "HealthCheck",
    "Kernel",
    "KernelSettings",
    "Middleware",
    "Migrations",
    "Notification",
    "Outbox",
    "PluginError",
    "PluginSettings",
    "ProblemError",
    "QuotaDecision",
    "RateLimit",
    "RateLimitDecision",
    "RateLimiter",
    "Route",
    "Runtime",
    "SettingsSchema",
    "Stash",
    "StashKey",
    "__version__",
    "create_app",
    "current_actor",
    "event_class",
    "hookimpl",
    "hookspec",
    "kernel_of",
    "pass_kernel",
    "read_body",
    "require",
]


def create_app(settings_dir: str | None = None, *, env: str | None = None) -> Runtime:
    """Return the ASGI application: a :class:`Runtime` over the settings directory and every installed plugin."""
    return Runtime(settings_dir, env=env)
