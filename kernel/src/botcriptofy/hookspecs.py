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
    from contextlib import AbstractContextManager
    from datetime import datetime

    import click
    from pydantic import BaseModel
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from ._errors import ProblemError
    from ._events import Envelope, EventHandler, Outbox
    from ._fleet import ConfigStore
    from ._kernel import Kernel
    from ._types import (
        Activity,
        Actor,
        ApprovalAction,
        ApprovalRequest,
        Approvals,
        AuditRecord,
        Cache,
        Database,
        DataSubject,
        Entitlements,
        HealthCheck,
        IdempotencyStore,
        Middleware,
        Migrations,
        Notification,
        NotificationChannel,
        Permission,
        QuotaDecision,
        RateLimiter,
        Recipient,
        ResponseObserver,
        Schedule,
        SecretBox,
        SettingsSchema,
        StaffCommand,
        Workflow,
        Workflows,
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


@hookspec
def register_response_observers(kernel: Kernel) -> list[ResponseObserver] | None:
    """Contribute callables the kernel's edge calls after every HTTP response, instead of a middleware.

    Each is called as ``observer(scope, status, seconds)`` once the request is over: the response's
    status (0 when none started: the server answers 500, or the client is gone) and the seconds
    since the edge received the request. Every response is seen, including those answered before any
    route was chosen (a rate limit's 429, a 503, an idempotent replay: ``"router" not in scope``); the
    matched route, when there is one, is ``scope["route"]``. Observers run on the event loop after
    the response went out, so they must be quick and must not await; one that raises is logged and
    the others still run. Collected once per generation. Cheaper than a middleware that only
    watches: no layer for requests to cross, and one clock reading shared by every observer.

    :return: a list of observers, or None.
    """


@hookspec(firstresult=True)
def render_error(kernel: Kernel, request: Request, error: Exception) -> Response | None:
    """Render an error response in place of the kernel's problem+json document.

    Stops at first non-None result.

    :param error: the exception raised while handling ``request``.
    :return: a response, or None to let the kernel render problem+json.
    """


# ---------------------------------------------------------------------------------------------
# HTTP edge: dependency errors, idempotency, OpenAPI security
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def translate_error(kernel: Kernel, error: Exception) -> ProblemError | None:
    """Turn an error that escaped a route or a middleware into a problem, typically a dependency error into a 503.

    Stops at first non-None result. Return :class:`botcriptofy.ServiceUnavailable` for errors
    meaning "a dependency cannot serve now" (a database or Redis connection error, a pool
    timeout) so the client gets 503 with ``Retry-After`` on a connection that stays usable, not a
    500. Called only for errors that are not already a :class:`botcriptofy.ProblemError`.

    :param error: the exception raised while handling a request.
    :return: the problem to answer with, or None when the plugin does not know the error.
    """


@hookspec(firstresult=True)
def idempotency_store(kernel: Kernel) -> IdempotencyStore | None:
    """Provide the durable store of ``Idempotency-Key`` records shared by every worker.

    Stops at first non-None result. Without one, the kernel keeps keys in process memory (one
    process only, lost on restart).

    :return: the store, or None.
    """


@hookspec(firstresult=True)
def config_store(kernel: Kernel) -> ConfigStore | None:
    """Provide the configuration store a fleet of hosts shares (fleet mode).

    Stops at first non-None result. With a store, the store's current version is this host's
    configuration: the runtime applies it before the worker is ready, whenever the store says it
    changed and every ``reconcile_interval``; the API and the CLI publish validated changes to it;
    an edit of this host's shared files is reported as drift, never applied. Without one (the
    default), this host's settings files are its configuration.

    :return: the store, or None.
    """


@hookspec
def register_security_schemes(kernel: Kernel) -> dict[str, dict[str, Any]] | None:
    """Declare the credentials the identity plugin accepts, as OpenAPI security scheme objects by name.

    ``/openapi.json`` lists them under ``components.securitySchemes``, and every operation that
    needs credentials accepts any one of them.

    :return: ``{name: security scheme object}``, or None.
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


@hookspec(firstresult=True)
def cached_actor(kernel: Kernel, request: Request) -> Actor | None:
    """Return the caller when it is known from this process's memory, without verifying anything again.

    Stops at first non-None result. Called before the flood guard by the rate limiter (and by
    :func:`botcriptofy.cached_actor`): an implementation must not do I/O beyond in-process cache
    reads, nor cryptography, and must answer None (never raise) for credentials it has not resolved
    and checked before, or whose resolution was invalidated since (logout, revocation, role or plan
    change). :func:`botcriptofy.current_actor` then resolves the caller through ``actor_from_request``.

    :return: the actor resolved earlier for these credentials, or None.
    """


@hookspec
def register_permissions(kernel: Kernel) -> list[Permission] | None:
    """Declare the permissions the plugin's routes, commands and actions check, with their default grants.

    The identity plugin merges every plugin's declarations into its permission catalogue, so a new
    plugin's routes work for the intended roles without an operator editing grants.

    :return: a list of permissions, or None.
    """


# ---------------------------------------------------------------------------------------------
# Service principals
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def service_actor(kernel: Kernel, name: str) -> Actor | None:
    """Resolve the service principal that background work of ``name`` (a plugin or an agent) runs as.

    Stops at first non-None result. The kernel runs event handlers inside this actor (readable
    with :func:`botcriptofy.acting_actor`), so permission checks and the audit trail apply to
    background work as they do to requests.

    :param name: the plugin's or the agent's name.
    :return: the actor, or None to let the kernel use a service actor with no permissions.
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

    Broadcast: every channel plugin is called, each in isolation. The kernel calls it from
    ``kernel.notify`` only while no plugin routes notifications (none subscribes to
    :class:`botcriptofy.NotificationRequested`); channels of the notifications plugin implement
    ``notification_channels`` instead.
    """


@hookspec
def notification_channels(kernel: Kernel) -> list[NotificationChannel] | None:
    """Contribute channels (e-mail, Telegram, ...) through which the notifications plugin delivers.

    The notifications plugin resolves the address, applies preferences, deduplication and flood
    caps, and calls each channel's ``send`` with a rendered :class:`botcriptofy.Delivery`, retrying
    with backoff and logging every attempt.

    :return: a list of channels, or None.
    """


@hookspec(firstresult=True)
def resolve_recipients(kernel: Kernel, address: str) -> list[Recipient] | None:
    """Resolve a notification address to the people behind it (the identity plugin implements this).

    ``user:<id>``, ``department:<name>`` or ``department:<name>:<minimum role>``, ``tenant:<id>``
    (its owner), ``email:<address>`` (the account with that address: how a plugin finds a person or
    a tenant by e-mail without reading the identity plugin's tables). Disabled and deleted accounts
    resolve to nobody, so they lose every channel at once.

    Stops at first non-None result.

    :return: the active people (possibly none), or None when the plugin does not know the address.
    """


# ---------------------------------------------------------------------------------------------
# Staff commands
# ---------------------------------------------------------------------------------------------


@hookspec
def register_staff_commands(kernel: Kernel) -> list[StaffCommand] | None:
    """Contribute staff commands: the same registry serves Telegram and ``POST /v1/staff/commands/{name}``.

    A command belongs to the generation: disabling its plugin removes it from the next one.
    Names are unique across plugins; a clash refuses the second plugin's command.

    :return: a list of commands, or None.
    """


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


@hookspec
def register_event_handlers(kernel: Kernel) -> list[EventHandler] | None:
    """Subscribe to events; each handler is delivered every matching event at least once.

    :return: a list of handlers, or None.
    """


@hookspec
def event_metadata(kernel: Kernel, event_type: str) -> dict[str, str] | None:
    """Add entries to ``Envelope.metadata`` of an event being published (a trace context, for instance).

    Called synchronously by ``kernel.events.publish``, in the publisher's context; the entries travel
    with the event through the outbox to every handler. Keep it cheap; a failure is logged and ignored.

    :return: string keys and values to merge, or None.
    """


@hookspec
def event_delivery(kernel: Kernel, envelope: Envelope, handler: EventHandler) -> AbstractContextManager[Any] | None:
    """Wrap one handler's delivery of an event: the kernel enters the returned context manager around the call.

    Used to restore what ``event_metadata`` carried (a span as the handler's parent, for instance).
    A failure to build or enter it is logged and the handler still runs.

    :return: a context manager, or None.
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
# Business figures
# ---------------------------------------------------------------------------------------------


@hookspec
def business_metrics(kernel: Kernel, since: datetime, until: datetime) -> dict[str, int] | None:
    """Report the business figures the plugin knows for the half-open window ``[since, until)``.

    Agents and reports read the platform's KPIs through this hook without importing the plugins
    that keep them. Each plugin returns only the figures it owns, as whole numbers (money in cents of
    the platform currency), under documented names such as ``signups`` (identity) or
    ``payments_failed`` and ``mrr_cents`` (billing); callers merge the dictionaries. A figure that is
    a level rather than a count (``mrr_cents``, ``subscriptions_active``) is its value at ``until``.

    :return: figures by name, or None when the plugin keeps none.
    """


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``botcriptofy`` command line.

    A command that needs a started kernel decorates itself with :func:`botcriptofy.pass_kernel`.
    ``@pass_kernel(needs=("database",))`` starts only the plugins implementing those hooks.
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


# ---------------------------------------------------------------------------------------------
# Audit trail
# ---------------------------------------------------------------------------------------------


@hookspec
def record_audit(kernel: Kernel, record: AuditRecord) -> None:
    """Record one audit entry (the audit plugin appends it to its tamper-evident trail).

    Broadcast, each recorder in isolation: a failing recorder is logged and the others still run.
    Called by ``kernel.audit(...)``; without any implementation that call only logs, once.

    :param record: who did what to which target, with its outcome; ids are pseudonymous and
        ``details`` holds no secret.
    """


# ---------------------------------------------------------------------------------------------
# Consent
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def has_consent(kernel: Kernel, subject: DataSubject, purpose: str) -> bool | None:
    """Answer whether ``subject`` consents now to the processing ``purpose`` names (``marketing_email``).

    Stops at first non-None result. Behind ``kernel.has_consent(subject, purpose)``; without an
    answer, nothing was consented to and the kernel answers False.

    :param purpose: a purpose of the consent ledger's settings.
    :return: True or False, or None when the plugin keeps no consents.
    """


@hookspec(firstresult=True)
def reauthenticate(kernel: Kernel, actor: Actor, credentials: dict[str, str]) -> bool | None:
    """Check the caller's credentials again before a sensitive action (erasing an account).

    Stops at first non-None result. ``credentials`` holds what the caller sent, such as
    ``password`` and ``totp_code``; the identity plugin checks them as it would at login.

    :return: True when they hold, False when they do not, None when the plugin does not know the actor.
    """


# ---------------------------------------------------------------------------------------------
# Approvals
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def approvals(kernel: Kernel) -> Approvals | None:
    """Provide the approvals service behind ``kernel.request_approval`` and ``kernel.decide_approval``.

    Stops at first non-None result. Without one, requesting an approval is refused with a clear error.

    :return: the approvals service, or None.
    """


@hookspec
def register_approval_actions(kernel: Kernel) -> list[ApprovalAction] | None:
    """Contribute the actions an approval can authorise; an approved request runs its action exactly once.

    :return: a list of actions, or None.
    """


@hookspec
def present_approval(kernel: Kernel, approval: ApprovalRequest) -> None:
    """Show an approval request to the people who may decide it (staff channels implement this).

    Broadcast, each channel in isolation. Called when the request is created and again when its
    outcome is known (approved, rejected or expired), so channels can update what they showed.
    """


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def secret_box(kernel: Kernel) -> SecretBox | None:
    """Provide the secret box that seals per-tenant secrets (exchange API keys, bot tokens) at rest.

    Stops at first non-None result.

    :return: the secret box, or None.
    """


@hookspec
def reencrypt_secrets(kernel: Kernel, box: SecretBox) -> int | None:
    """Re-seal under ``box.key_id`` every value the plugin sealed under an older key.

    Broadcast, each plugin in isolation; ``botcriptofy secrets reencrypt`` calls it after a key rotation.

    :param box: the kernel's secret box.
    :return: how many values changed, or None when the plugin stores no sealed values.
    """


# ---------------------------------------------------------------------------------------------
# Plugin hookspecs
# ---------------------------------------------------------------------------------------------


@hookspec
def register_hookspecs() -> list[Any] | None:
    """Contribute hook specifications that other plugins implement (modules or classes of ``@hookspec`` functions).

    Called when the plugin is registered, before anything else; its specs join the kernel's. An
    implementation in another plugin is marked ``@hookimpl(optionalhook=True)``, so that plugin
    still loads when the one that declares the hook is not installed.

    :return: a list of modules or classes, or None.
    """


# ---------------------------------------------------------------------------------------------
# Schedules and workflows
# ---------------------------------------------------------------------------------------------


@hookspec
def register_schedules(kernel: Kernel) -> list[Schedule] | None:
    """Declare the schedules the plugin owns; each runs once per tick across every worker and host.

    The workflow engine creates them, pauses them while the plugin is disabled and resumes them
    when it is enabled again. Without an engine they do not run, and ``/-/ready`` and
    ``botcriptofy plugins list`` say so.

    :return: a list of schedules, or None.
    """


@hookspec
def register_workflows(kernel: Kernel) -> list[Workflow | Activity] | None:
    """Contribute workflow definitions and activities, for work that needs more than a scheduled call.

    They run on the plugin's own task queue while the plugin is enabled.

    :return: a list of workflows and activities, or None.
    """


@hookspec(firstresult=True)
def workflow_engine(kernel: Kernel) -> Workflows | None:
    """Provide the workflow engine behind ``kernel.workflows()``.

    Stops at first non-None result. Without one, ``kernel.workflows()`` is refused with a clear error.

    :return: the engine, or None.
    """
