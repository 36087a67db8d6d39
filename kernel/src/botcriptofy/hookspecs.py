"""Hook specifications: the whole contract between the kernel and its plugins.

Every hook is called with keyword arguments only. An implementation may be a plain function or a
coroutine function; the kernel awaits what needs awaiting. Broadcast hooks (events, notifications,
lifecycle, metrics) call each implementation in isolation: one plugin's failure is logged with its
``plugin`` and ``hook`` and the others still run. Request-path hooks let errors propagate to the one
error handler, which renders problem+json.

``docs/hooks.md`` documents each hook with the signature below; a test keeps the two in step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._markers import hookspec

if TYPE_CHECKING:
    import click
    from pydantic import BaseModel
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from ._events import EventHandler, Outbox
    from ._kernel import Kernel
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
        RateLimiter,
        SettingsSchema,
    )


# ---------------------------------------------------------------------------------------------
# Plugin settings
# ---------------------------------------------------------------------------------------------


@hookspec
def plugin_settings_schema() -> SettingsSchema | None:
    """Declare the plugin's settings section: a pydantic model with defaults and its live keys.

    The section is named after the plugin (``[default.<name>]`` in ``settings.toml``). Every
    candidate configuration is validated against it before anything is applied.

    :return: the schema, or None when the plugin takes no settings.
    """


# ---------------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------------


@hookspec
def startup(kernel: Kernel) -> None:
    """Start the plugin: open pools, start background tasks, keep state in ``kernel.stash``.

    Called for this plugin only, when it starts: at boot, when it is enabled live, or when a
    change to one of its non-live settings restarts it. Raising refuses the plugin at boot and
    refuses the whole configuration change at reload.

    :param kernel: the generation being built; ``kernel.settings_for(name)`` is the new settings.
    """


@hookspec
def shutdown(kernel: Kernel) -> None:
    """Stop the plugin and release what ``startup`` acquired.

    Called for this plugin only, after the last request running on ``kernel``'s generation has
    finished: when the plugin is disabled, restarted, or the process stops.

    :param kernel: the generation the plugin is leaving.
    """


@hookspec
def settings_changed(kernel: Kernel, previous: BaseModel, current: BaseModel, changed: frozenset[str]) -> None:
    """Apply a change confined to the plugin's live settings keys without restarting it.

    Called for this plugin only, before the new generation takes traffic.

    :param kernel: the generation being built.
    :param previous: the plugin's settings before the change.
    :param current: the plugin's settings after the change.
    :param changed: the names of the keys that changed.
    """


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


@hookspec
def register_routes(kernel: Kernel) -> list[BaseRoute] | None:
    """Contribute routes to the next app generation.

    Return :class:`botcriptofy.Route` declarations (validated, listed in ``/openapi.json``) or
    plain Starlette routes.

    :return: a list of routes, or None.
    """


@hookspec
def register_middleware(kernel: Kernel) -> list[Middleware] | None:
    """Contribute ASGI middleware; :class:`botcriptofy.Middleware` ``priority`` orders them (lower wraps outer).

    :return: a list of middleware, or None.
    """


@hookspec(firstresult=True)
def render_error(kernel: Kernel, request: Request, error: Exception) -> Response | None:
    """Render an error response in place of the kernel's problem+json document.

    Stops at first non-None result.

    :param error: the exception raised while handling ``request``.
    :return: a response, or None to let the kernel render problem+json.
    """


# ---------------------------------------------------------------------------------------------
# Identity
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def actor_from_request(kernel: Kernel, request: Request) -> Actor | None:
    """Resolve who is calling from the request's credentials.

    Stops at first non-None result. Raise :class:`botcriptofy.ProblemError` (401) for
    credentials that are present but invalid; return None when there are none.

    :return: the actor, or None for an anonymous request.
    """


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def database(kernel: Kernel) -> Database | None:
    """Provide the database: sessions scoped to a tenant, over a pooled engine.

    Stops at first non-None result.

    :return: the database, or None.
    """


@hookspec
def register_migrations(kernel: Kernel) -> Migrations | None:
    """Declare the plugin's Alembic migrations; ``botcriptofy db upgrade`` runs every enabled plugin's.

    :return: the migrations, or None when the plugin owns no tables.
    """


@hookspec(firstresult=True)
def event_outbox(kernel: Kernel) -> Outbox | None:
    """Provide the transactional outbox that makes published events durable.

    Stops at first non-None result. Without one, events are delivered in process right away.

    :return: the outbox, or None.
    """


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def cache_backend(kernel: Kernel) -> Cache | None:
    """Provide the cache shared by every plugin.

    Stops at first non-None result. Without one, ``kernel.cache()`` is a small in-process cache.

    :return: the cache, or None.
    """


# ---------------------------------------------------------------------------------------------
# Rate limiting and entitlements
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def rate_limiter(kernel: Kernel) -> RateLimiter | None:
    """Provide the rate limiter that plugins use for their own guards (such as login attempts).

    Stops at first non-None result.

    :return: the rate limiter, or None.
    """


@hookspec(firstresult=True)
def entitlements_for(kernel: Kernel, tenant_id: str) -> Entitlements | None:
    """Answer what the tenant's plan allows.

    Stops at first non-None result.

    :return: the tenant's entitlements, or None when no plugin knows plans.
    """


@hookspec(firstresult=True)
def consume_quota(kernel: Kernel, tenant_id: str, quota: str, amount: int) -> QuotaDecision | None:
    """Count ``amount`` units of ``quota`` against the tenant's plan, refusing past the limit.

    Stops at first non-None result.

    :return: the decision, or None when no plugin enforces quotas.
    """


# ---------------------------------------------------------------------------------------------
# Notifications
# ---------------------------------------------------------------------------------------------


@hookspec
def send_notification(kernel: Kernel, notification: Notification) -> None:
    """Deliver a notification through the plugin's channel when it is addressed to it.

    Broadcast: every channel plugin is called, each in isolation.
    """


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


@hookspec
def register_event_handlers(kernel: Kernel) -> list[EventHandler] | None:
    """Subscribe to events; each handler is delivered every matching event at least once.

    :return: a list of handlers, or None.
    """


# ---------------------------------------------------------------------------------------------
# Health and metrics
# ---------------------------------------------------------------------------------------------


@hookspec
def health_checks(kernel: Kernel) -> list[HealthCheck] | None:
    """Contribute readiness checks, run by ``/-/ready``.

    :return: a list of checks, or None.
    """


@hookspec
def register_metrics(kernel: Kernel) -> list[Any] | None:
    """Contribute Prometheus collectors; they are registered while the plugin runs.

    :return: a list of ``prometheus_client`` collectors, or None.
    """


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``botcriptofy`` command line.

    A command that needs a started kernel decorates itself with :func:`botcriptofy.pass_kernel`.
    """


# ---------------------------------------------------------------------------------------------
# Privacy
# ---------------------------------------------------------------------------------------------


@hookspec
def export_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    """Return everything the plugin holds about one data subject, for a data-portability request.

    :return: a JSON-serialisable mapping, or None when the plugin holds nothing about them.
    """


@hookspec
def erase_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    """Erase or anonymise the plugin's data about one data subject.

    Keep what the law obliges the platform to keep (such as invoices), anonymised where possible.

    :return: a report of what was erased and what was kept and why, or None.
    """
