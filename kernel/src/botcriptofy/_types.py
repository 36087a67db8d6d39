"""Value types and protocols that hooks exchange."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel
from starlette.middleware import Middleware as _StarletteMiddleware


@dataclass(frozen=True, slots=True)
class SettingsSchema:
    """A plugin's settings: a pydantic model with defaults, and the keys that may change live.

    A change to any other key restarts the plugin (``shutdown`` then ``startup``) in the next
    generation; a change confined to ``live`` keys calls its ``settings_changed`` hook instead.
    ``guarded`` keys (backend addresses such as a database or Redis URL) are never changed while
    running: the kernel refuses such a change live, naming the file and key, and it takes effect
    at the next restart (``botcriptofy restart``).
    """

    model: type[BaseModel]
    live: frozenset[str] = frozenset()
    guarded: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is calling: a user, an API key, or a service principal such as an agent.

    Well-known ``attributes`` an identity plugin sets when it knows them: ``email``, ``name`` and
    ``email_verified`` (the person proved the address). A missing key means "not told".
    """

    id: str
    kind: str
    tenant_id: str | None = None
    permissions: frozenset[str] = frozenset()
    super_admin: bool = False
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def can(self, permission: str) -> bool:
        """Return whether the actor holds ``permission`` (``department:action``; ``department:*`` covers a department)."""
        if self.super_admin or permission in self.permissions:
            return True
        department = permission.partition(":")[0]
        return f"{department}:*" in self.permissions or "*" in self.permissions


class Middleware(_StarletteMiddleware):
    """Starlette middleware with a ``priority``: lower numbers wrap further out.

    Conventional bands: 0-99 transport guards (flood guard, rate limits), 100-199 observability,
    200-299 identity, 300+ everything else.
    """

    def __init__(self, cls: Any, *args: Any, priority: int = 300, **kwargs: Any) -> None:
        super().__init__(cls, *args, **kwargs)
        self.priority = priority


ResponseObserver = Callable[[MutableMapping[str, Any], int, float], None]
"""Called by the kernel's edge after every response: ``(scope, status, seconds)`` (see ``register_response_observers``)."""


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """A readiness check: ``check`` raises (or returns a falsy value) when the dependency is down."""

    name: str
    check: Callable[[], Awaitable[Any] | Any]
    timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class Migrations:
    """A plugin's Alembic migrations: the script directory and the metadata of its models."""

    directory: Path
    metadata: Any = None


@dataclass(frozen=True, slots=True)
class NotificationAction:
    """A button under a notification or command reply: a link (``url``) or a server-side ``callback`` id.

    ``style`` is ``default``, ``primary`` or ``danger``; channels without buttons show links as text.
    """

    label: str
    url: str | None = None
    callback: str | None = None
    style: str = "default"


@dataclass(frozen=True, slots=True)
class Notification:
    """A message for people, addressed to ``recipient``.

    ``recipient`` is an address: ``user:<id>``, ``department:<name>`` or
    ``department:<name>:<minimum role>`` (``viewer`` < ``member`` < ``manager``), or
    ``tenant:<id>`` (the tenant's owner). ``category`` (``billing.payment_failed``,
    ``agent.alert``) drives preferences and templates; ``severity`` is ``info``, ``warning``,
    ``error`` or ``critical`` (critical ignores quiet hours). With ``template`` the subject and body
    are rendered per recipient locale from ``params``; otherwise ``subject`` and ``body`` are sent as
    given. ``dedup_key`` makes a repeat within the notifications plugin's window go out once per
    person. ``channel`` None means every channel that can reach the recipient.
    """

    recipient: str
    subject: str = ""
    body: str = ""
    channel: str | None = None
    severity: str = "info"
    data: Mapping[str, Any] = field(default_factory=dict)
    category: str = "general"
    template: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    dedup_key: str | None = None
    actions: tuple[NotificationAction, ...] = ()
    tenant_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the notification as JSON-serialisable data (``params`` and ``data`` must already be JSON)."""
        return {
            "recipient": self.recipient,
            "subject": self.subject,
            "body": self.body,
            "channel": self.channel,
            "severity": self.severity,
            "data": dict(self.data),
            "category": self.category,
            "template": self.template,
            "params": dict(self.params),
            "dedup_key": self.dedup_key,
            "actions": [{"label": a.label, "url": a.url, "callback": a.callback, "style": a.style} for a in self.actions],
            "tenant_id": self.tenant_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        values = dict(data)
        values["actions"] = tuple(NotificationAction(**a) for a in values.get("actions") or ())
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Recipient:
    """A person an address resolves to, as the identity plugin answers ``resolve_recipients``.

    ``actor`` carries the person's current permissions (channels check it before running a command
    or taking an approval decision); ``roles`` maps department to role for staff.
    """

    user_id: str
    tenant_id: str | None = None
    name: str = ""
    email: str | None = None
    email_verified: bool = False
    locale: str | None = None
    roles: Mapping[str, str] = field(default_factory=dict)
    actor: Actor | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification rendered for one channel and one person (or one address, for group channels).

    ``text`` is plain text; ``html`` is the same content with every parameter HTML-escaped.
    ``recipient`` is None for a delivery to a whole address (a department's group chat).
    """

    id: str
    channel: str
    address: str
    notification: Notification
    subject: str
    text: str
    html: str
    locale: str
    recipient: Recipient | None = None
    attempt: int = 1


class DeliveryRefused(Exception):
    """Raised by a channel that can never deliver this one (no linked chat, no e-mail): logged, not retried."""


@runtime_checkable
class NotificationChannel(Protocol):
    """A way to reach people, contributed through ``notification_channels``.

    ``route(address)`` answers ``"person"`` (one delivery per resolved person), ``"address"`` (one
    delivery for the whole address, such as a department chat) or ``None`` (not through this
    channel). ``send`` raises :class:`DeliveryRefused` for a permanent failure and any other
    exception for a retry.
    """

    name: str

    def route(self, address: str) -> str | None: ...

    async def send(self, delivery: Delivery) -> None: ...


@dataclass(frozen=True, slots=True)
class CommandReply:
    """What a staff command answers: text (plain; channels escape it) and optional buttons."""

    text: str
    buttons: tuple[NotificationAction, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a staff command handler receives: who runs it, from which channel, and the validated arguments."""

    kernel: Any
    actor: Actor
    channel: str
    arguments: BaseModel | None = None
    locale: str = "pt-BR"


@dataclass(frozen=True, slots=True)
class StaffCommand:
    """A command staff run from Telegram or ``POST /v1/staff/commands/{name}``.

    ``name`` is lower case (``payments``); ``description`` maps locale to a one-line text (``pt-BR``
    and ``en``); ``permission`` is checked against the caller before anything runs (None: any
    authenticated staff member); ``arguments`` is a pydantic model (positional words fill its fields
    in order in chat). ``handler`` receives a :class:`CommandContext` and returns a :class:`CommandReply`.
    """

    name: str
    description: Mapping[str, str]
    handler: Callable[[CommandContext], Awaitable[CommandReply]]
    permission: str | None = None
    arguments: type[BaseModel] | None = None

    def describe(self, locale: str) -> str:
        return self.description.get(locale) or self.description.get("en") or next(iter(self.description.values()), self.name)

    def usage(self) -> str:
        fields = self.arguments.model_fields if self.arguments is not None else {}
        words = [f"<{n}>" if f.is_required() else f"[{n}]" for n, f in fields.items()]
        return " ".join([f"/{self.name}", *words])


@dataclass(frozen=True, slots=True)
class DataSubject:
    """One person whose data a privacy request concerns.

    ``tenant_id`` is set when the tenant is the person's own (a trader's or an influencer's), so
    tenant-level data (a billing customer, cached tenant entries) is theirs; it is None for company
    staff. ``email`` lets plugins find copies of the address; it is never stored with the request.
    """

    user_id: str
    tenant_id: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One limit: ``limit`` requests per ``period`` seconds with bursts up to ``burst``; a hit costs ``cost``."""

    key: str
    limit: int
    period: float
    burst: int
    cost: int = 1


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The outcome of a rate-limit check, with the figures for the ``RateLimit-*`` headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Entitlements:
    """What a tenant's plan allows. A limit of ``None`` means unlimited."""

    plan: str
    limits: Mapping[str, int | None]
    features: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    """The outcome of consuming a quota; ``upgrade_to`` names the plan that lifts a refused quota."""

    allowed: bool
    quota: str
    used: int
    limit: int | None
    plan: str
    upgrade_to: str | None = None


@runtime_checkable
class Database(Protocol):
    """What the storage plugin provides through the ``database`` hook.

    ``dialect`` is ``"sqlite"`` or ``"postgresql"``; ``engine`` is the SQLAlchemy ``AsyncEngine``.
    """

    url: str
    dialect: str
    engine: Any

    def session(self, *, tenant_id: str | None = None, system: bool = False, write_lock: bool = False) -> AbstractAsyncContextManager[Any]:
        """Open a unit of work: an ``AsyncSession`` in a transaction that commits when the block succeeds.

        With ``tenant_id``, queries on tenant-owned tables (those with a ``tenant_id`` column) see
        only that tenant's rows and new rows get that tenant. ``system=True`` opens an unscoped
        session for platform jobs. With neither, reading a tenant-owned table is an error.
        ``write_lock=True`` takes the write lock when the transaction begins (SQLite's
        ``BEGIN IMMEDIATE``), so a transaction that reads and then writes waits for other writers
        instead of failing with "database is locked"; PostgreSQL needs nothing of the kind.
        """
        ...


@runtime_checkable
class Cache(Protocol):
    """What a cache backend provides through the ``cache_backend`` hook."""

    async def get(self, key: str, *, namespace: str = "default") -> Any | None: ...

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, tags: Iterable[str] = (), namespace: str = "default"
    ) -> None: ...

    async def delete(self, key: str, *, namespace: str = "default") -> None: ...

    async def invalidate_tags(self, *tags: str) -> None: ...


@runtime_checkable
class RateLimiter(Protocol):
    """What a rate limiter provides through the ``rate_limiter`` hook."""

    async def hit(self, *limits: RateLimit) -> RateLimitDecision:
        """Count one hit against every limit atomically; refuse when any is exhausted."""
        ...


@dataclass(frozen=True, slots=True)
class Permission:
    """A permission a plugin declares through ``register_permissions``.

    ``name`` is ``department:action`` (``billing:read``, ``audit:verify``). ``grants`` lists who
    holds it by default: ``"<department>:<role>"`` (role ``manager``, ``member`` or ``viewer``; a
    grant to a role also covers the roles above it) or an account type (``"trader"``,
    ``"influencer"``). Operators add grants in the identity plugin's settings.
    """

    name: str
    description: str
    grants: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """An action waiting for a person's decision, as the approvals provider stores and staff channels present it.

    ``status`` is ``pending``, ``approved``, ``rejected`` or ``expired``. ``permission`` is what a
    decider must hold; ``destructive`` asks channels for a second confirmation before approving.
    """

    id: str
    action: str
    summary: str
    department: str
    permission: str
    requester: str
    expires_at: datetime
    created_at: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)
    tenant_id: str | None = None
    destructive: bool = False
    status: str = "pending"
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ApprovalAction:
    """What runs when an approval for ``name`` is approved: exactly once, retried until it succeeds.

    A plugin contributes its actions through ``register_approval_actions``; ``execute`` receives
    the approved request (with ``decided_by``) and returns a JSON-serialisable result. A try may be
    repeated after a crash, so key side effects by ``approval.id``; raising
    :class:`botcriptofy.ProblemError` with a 4xx status stops the retries and reports the failure.
    """

    name: str
    execute: Callable[[ApprovalRequest], Awaitable[Any]]
    description: str = ""
    destructive: bool = False


@runtime_checkable
class Approvals(Protocol):
    """What the approvals provider (the workflows plugin) offers through the ``approvals`` hook."""

    async def request(
        self,
        *,
        action: str,
        summary: str,
        department: str,
        permission: str,
        requester: Actor,
        expires_in: float,
        payload: Mapping[str, Any] | None = None,
        tenant_id: str | None = None,
        destructive: bool = False,
    ) -> ApprovalRequest:
        """Store a pending request, present it through ``present_approval`` and start its expiry timer."""
        ...

    async def decide(self, approval_id: str, *, approve: bool, actor: Actor, reason: str | None = None) -> ApprovalRequest:
        """Record the decision.

        Raise :class:`botcriptofy.ProblemError`: 403 when ``actor`` lacks the permission, 409 when
        the request is already decided or expired, 404 when it is unknown.
        """
        ...

    async def get(self, approval_id: str) -> ApprovalRequest | None: ...


# -- schedules and workflows --------------------------------------------------------------------

OVERLAP_POLICIES = frozenset({"skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"})


@dataclass(frozen=True, slots=True)
class ScheduledRun:
    """One firing of a :class:`Schedule`, as its handler receives it.

    ``scheduled_at`` is the planned start (the tick), ``started_at`` when the handler started.
    """

    schedule_id: str
    scheduled_at: datetime | None
    started_at: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A job a plugin owns that runs once per tick across every worker and host.

    Give exactly one of ``cron`` (a five-field cron expression read in ``time_zone``) or
    ``interval`` (seconds). ``overlap`` says what happens when a tick comes while the previous run is
    still going: ``skip`` (default), ``buffer_one``, ``buffer_all``, ``cancel_other``,
    ``terminate_other`` or ``allow_all``. Ticks missed while no engine ran are caught up when they
    are younger than ``catchup_window`` seconds. ``handler`` runs as a retried activity of the
    owning plugin and receives a :class:`ScheduledRun`.
    """

    id: str
    handler: Callable[[ScheduledRun], Awaitable[Any]]
    cron: str | None = None
    interval: float | None = None
    time_zone: str = "America/Sao_Paulo"
    overlap: str = "skip"
    catchup_window: float = 60.0
    payload: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    timeout: float = 300.0

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval is None):
            raise ValueError(f"schedule '{self.id}': give exactly one of cron or interval")
        if self.interval is not None and self.interval < 1:
            raise ValueError(f"schedule '{self.id}': interval must be at least 1 second, not {self.interval}")
        if self.overlap not in OVERLAP_POLICIES:
            raise ValueError(f"schedule '{self.id}': overlap must be one of {', '.join(sorted(OVERLAP_POLICIES))}, not {self.overlap!r}")


@dataclass(frozen=True, slots=True)
class Activity:
    """A step of a workflow that touches the world (database, network, notifications).

    ``execute`` receives the input mapping and returns a JSON-serialisable result. It runs at least
    once and is retried with backoff until it succeeds or ``max_attempts`` is spent (0: no limit),
    so it must be idempotent. Each try gets ``timeout`` seconds. Raising
    :class:`botcriptofy.ProblemError` with a 4xx status stops the retries.
    """

    name: str
    execute: Callable[[Mapping[str, Any]], Awaitable[Any]]
    timeout: float = 60.0
    max_attempts: int = 0


class WorkflowContext(Protocol):
    """What a workflow's ``run`` function may do. Everything else it does must be deterministic.

    A workflow is replayed from its history after a crash or a worker restart: it must not read
    clocks, random numbers, files or the network itself; it asks the context instead.
    """

    workflow_id: str

    def now(self) -> datetime:
        """The workflow's deterministic current time (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait durably: the timer survives restarts of every worker."""
        ...

    async def activity(self, name: str, input: Mapping[str, Any] | None = None) -> Any:
        """Run an :class:`Activity` (of any enabled plugin) and return its result; retried as it declares."""
        ...

    async def wait_for_signal(self, name: str, *, timeout: float | None = None) -> Mapping[str, Any] | None:  # noqa: ASYNC109
        """Wait for the next signal ``name``; return its payload, or None when ``timeout`` seconds pass first."""
        ...

    def patched(self, patch_id: str) -> bool:
        """Return True on executions that reach this point with the new code (versioning a changed workflow)."""
        ...


@dataclass(frozen=True, slots=True)
class Workflow:
    """A durable function: ``run(context, input)`` may sleep for days and survives restarts.

    ``name`` is global (prefix it with the plugin's name). Start one with
    ``await kernel.workflows().start(name, id=..., input=...)``; it runs on the owning plugin's
    task queue. An exception escaping ``run`` fails the execution.
    """

    name: str
    run: Callable[[WorkflowContext, Mapping[str, Any]], Awaitable[Any]]
    description: str = ""


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """One workflow execution, as operators see it."""

    id: str
    workflow: str
    status: str
    started_at: datetime | None = None
    closed_at: datetime | None = None
    task_queue: str | None = None
    run_id: str | None = None


@runtime_checkable
class Workflows(Protocol):
    """What the workflow engine (the workflows plugin) offers through the ``workflow_engine`` hook."""

    async def start(self, workflow: str, *, id: str, input: Mapping[str, Any] | None = None) -> WorkflowRun:
        """Start ``workflow`` under ``id``; when one with that id is already running, return it instead (idempotent)."""
        ...

    async def signal(self, workflow_id: str, signal: str, payload: Mapping[str, Any] | None = None) -> bool:
        """Send a signal; return False when no workflow with that id is running."""
        ...

    async def cancel(self, workflow_id: str) -> bool:
        """Ask a running workflow to stop; return False when none with that id is running."""
        ...

    async def describe(self, workflow_id: str) -> WorkflowRun | None: ...

    async def wait(self, workflow_id: str) -> Any:
        """Wait for the workflow to finish; return its result, or raise :class:`RuntimeError` naming why it did not complete."""
        ...


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response kept under an ``Idempotency-Key``: what a retry of the same request gets back."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What an idempotency store holds for one key: the request's fingerprint and, once done, its response.

    ``response`` is None while the first request with the key is still running.
    """

    fingerprint: str
    response: StoredResponse | None = None


@runtime_checkable
class IdempotencyStore(Protocol):
    """Where the kernel keeps ``Idempotency-Key`` records (the ``idempotency_store`` hook).

    ``key`` is an opaque digest of the caller and the client's key, never the client's key itself.
    Every method must be safe across processes sharing the store: ``claim`` is the one atomic step.
    """

    async def claim(self, key: str, fingerprint: str, *, ttl: float, lease: float) -> IdempotencyRecord | None:
        """Claim ``key`` for a request with ``fingerprint``.

        Return None when the caller now holds the key and must do the work (the key was free,
        expired, or held past ``lease`` seconds by a request that never finished); otherwise
        return the record found, completed or still in progress. Keep a claimed key ``ttl`` seconds.
        """
        ...

    async def complete(self, key: str, response: StoredResponse, *, ttl: float) -> None:
        """Store the response of the request holding ``key``; keep it ``ttl`` seconds."""
        ...

    async def release(self, key: str) -> None:
        """Forget a claim whose request failed, so a retry runs it again."""
        ...


@runtime_checkable
class SecretBox(Protocol):
    """Authenticated encryption of small secrets at rest (exchange API keys, bot tokens), through ``kernel.secret_box()``.

    ``context`` binds a sealed value to where it is stored (``"<plugin>.<table>.<column>:<row id>"``):
    a ciphertext copied elsewhere does not open. ``key_id`` names the key that seals now; older keys
    still open what they sealed until ``botcriptofy secrets reencrypt`` has moved it to the current
    key. ``open`` raises ``ValueError`` for a value it cannot open (unknown key, altered, moved).
    """

    @property
    def key_id(self) -> str: ...

    def seal(self, plaintext: str, *, context: str) -> str:
        """Encrypt ``plaintext`` under the current key; the result names the key and is ASCII."""
        ...

    def open(self, sealed: str, *, context: str) -> str:
        """Decrypt a value sealed by this box (under any configured key)."""
        ...

    def needs_reseal(self, sealed: str) -> bool:
        """Return whether ``sealed`` is under a key other than the current one."""
        ...


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry for the audit trail, as ``kernel.audit(...)`` hands it to the ``record_audit`` hook.

    ``actor_id`` and ``subject`` are pseudonymous ids (user, API key or agent principal ids), never
    e-mail addresses; ``details`` is a small JSON-serialisable mapping that never holds a secret.
    ``outcome`` is ``success``, ``failure`` or ``denied``. ``tenant_id`` None files the entry in the
    platform's chain.
    """

    action: str
    actor_id: str | None = None
    actor_kind: str | None = None
    tenant_id: str | None = None
    target: str | None = None
    outcome: str = "success"
    subject: str | None = None
    request_id: str | None = None
    client_address: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
