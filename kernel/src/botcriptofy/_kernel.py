"""A kernel generation: one applied configuration as hooks and routes see it.

A *generation* is one applied configuration: its validated settings, its enabled plugins, their
hooks and the Starlette app built from them. :class:`botcriptofy._runtime.Runtime` builds, swaps
and retires generations; this module knows nothing of it beyond its type.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from starlette.applications import Starlette

from ._errors import PluginError, ProblemError
from ._events import EventBus, NotificationRequested, Outbox
from ._http import openapi_document, validation_problem
from ._manager import PluginInfo
from ._settings import KernelSettings, ValidConfig
from ._stash import Stash
from ._types import (
    Actor,
    ApprovalRequest,
    Approvals,
    AuditRecord,
    Cache,
    CommandContext,
    CommandReply,
    Database,
    DataSubject,
    Entitlements,
    Notification,
    QuotaDecision,
    RateLimiter,
    Recipient,
    ResponseObserver,
    SecretBox,
    StaffCommand,
    Workflows,
)
from ._util import await_me_maybe, call_first
from ._version import __version__

if TYPE_CHECKING:
    from ._runtime import Runtime

log = logging.getLogger("botcriptofy")

# Whether "no plugin records audit entries" was logged in this process (logged once).
_AUDIT_WARNED: list[bool] = []


class Kernel:
    """One generation of the service, as hooks and routes see it.

    Hooks receive it as ``kernel``; a route reaches the generation serving it with
    :func:`botcriptofy.kernel_of`. Plugins keep their state in :attr:`stash`.
    """

    def __init__(
        self,
        runtime: Runtime,
        number: int,
        config: ValidConfig,
        plugins: dict[str, PluginInfo],
        manager: pluggy.PluginManager,
        stash: Stash,
    ) -> None:
        self.runtime = runtime
        self.generation = number
        self.config = config
        self.plugins = plugins
        self.manager = manager
        self.hook = manager.hook
        self.stash = stash
        self.events = EventBus(self, ())
        self.app: Starlette | None = None
        self.response_observers: tuple[ResponseObserver, ...] = ()  # register_response_observers, called by the edge
        self.config_version: int | None = None
        self.inflight = 0
        self.retired = False
        self.drained = asyncio.Event()
        self._providers: dict[str, Any] = {}
        self._openapi: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<Kernel generation={self.generation} plugins={sorted(self.plugins)}>"

    # -- settings -------------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        """The effective settings of this generation, every section, as plain data."""
        return self.config.raw.data

    @property
    def kernel_settings(self) -> KernelSettings:
        return self.config.kernel

    @property
    def env(self) -> str:
        return self.config.raw.env

    @property
    def version(self) -> str:
        return __version__

    @property
    def state_dir(self) -> Path:
        return Path(self.config.kernel.state_dir)

    def settings_for(self, plugin: str) -> Any:
        """Return the plugin's validated settings model (None when it takes no settings)."""
        return self.config.plugins.get(plugin)

    def current(self) -> Kernel:
        """Return the generation serving new requests now (background tasks should use it)."""
        return self.runtime.current or self

    @property
    def metrics(self) -> CollectorRegistry:
        """The process's Prometheus registry."""
        return self.runtime.metrics

    # -- providers ------------------------------------------------------------------------

    def _provide(self, hook_name: str) -> Any:
        if hook_name not in self._providers:
            self._providers[hook_name] = getattr(self.hook, hook_name)(kernel=self)
        return self._providers[hook_name]

    def database(self) -> Database:
        """Return the database provided by the storage plugin."""
        found = self._provide("database")
        if found is None:
            raise RuntimeError("no plugin provides the database: enable the storage plugin (remove it from plugins.disabled)")
        return found  # type: ignore[no-any-return]

    def has_database(self) -> bool:
        return self._provide("database") is not None

    def outbox(self) -> Outbox | None:
        return self._provide("event_outbox")  # type: ignore[no-any-return]

    def cache(self) -> Cache:
        """Return the shared cache: the cache plugin's, or an in-process fallback."""
        return self._provide("cache_backend") or self.runtime.local_cache  # type: ignore[no-any-return]

    def rate_limiter(self) -> RateLimiter | None:
        return self._provide("rate_limiter")  # type: ignore[no-any-return]

    async def entitlements(self, tenant_id: str) -> Entitlements | None:
        return await await_me_maybe(call_first(self.hook.entitlements_for, kernel=self, tenant_id=tenant_id))  # type: ignore[no-any-return]

    async def consume_quota(self, tenant_id: str, quota: str, amount: int = 1) -> QuotaDecision | None:
        """Consume a quota; raise a 403 problem naming the quota and the plan that lifts it when refused."""
        decision = await await_me_maybe(self.hook.consume_quota(kernel=self, tenant_id=tenant_id, quota=quota, amount=amount))
        if decision is not None and not decision.allowed:
            lift = f" The {decision.upgrade_to} plan lifts it." if decision.upgrade_to else ""
            raise ProblemError(
                403,
                "Quota exceeded",
                f"The '{decision.quota}' quota of the {decision.plan} plan is used up ({decision.used}/{decision.limit}).{lift}",
                type="https://botcriptofy.dev/problems/quota-exceeded",
                quota=decision.quota,
                plan=decision.plan,
                upgrade_to=decision.upgrade_to,
                used=decision.used,
                limit=decision.limit,
            )
        return decision  # type: ignore[no-any-return]

    # -- calling hooks --------------------------------------------------------------------

    async def broadcast(self, hook_name: str, *, strict: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Call every implementation of a hook in isolation; return each plugin's result.

        A failing implementation is logged with ``plugin`` and ``hook`` and left out of the result; with
        ``strict`` the others still run, then the first failure is raised.
        """
        results: dict[str, Any] = {}
        failure: Exception | None = None
        for impl in reversed(getattr(self.hook, hook_name).get_hookimpls()):
            try:
                results[impl.plugin_name] = await await_me_maybe(impl.function(**{name: kwargs[name] for name in impl.argnames}))
            except Exception as error:
                failure = failure or error
                log.exception(
                    "plugin '%s', hook '%s' failed", impl.plugin_name, hook_name, extra={"plugin": impl.plugin_name, "hook": hook_name}
                )
        if strict and failure is not None:
            raise failure
        return results

    async def call_plugin(self, plugin: str, hook_name: str, **kwargs: Any) -> Any:
        """Call one plugin's implementation of a hook; errors become :class:`PluginError`."""
        for impl in getattr(self.hook, hook_name).get_hookimpls():
            if impl.plugin_name == plugin:
                try:
                    return await await_me_maybe(impl.function(**{name: kwargs[name] for name in impl.argnames}))
                except Exception as error:
                    raise PluginError(
                        plugin,
                        f"raised {error!r}",
                        hook=hook_name,
                        fix=f'see the traceback above; disable the plugin with plugins.disabled = ["{plugin}"] meanwhile.',
                    ) from error
        return None

    def _require(self, hook_name: str, what: str, slug: str, *, plugin: str, title: str) -> Any:
        """Return what ``hook_name`` provides, or raise a 503 problem naming the plugin to enable."""
        found = self._provide(hook_name)
        if found is None:
            raise ProblemError(
                503,
                title,
                f"No plugin provides {what}: enable the {plugin} plugin (remove it from plugins.disabled).",
                type=f"https://botcriptofy.dev/problems/{slug}-unavailable",
            )
        return found

    def approvals(self) -> Approvals:
        """Return the approvals service (the workflows plugin); raise a clear error when none is enabled."""
        return self._require("approvals", "approvals", "approvals", plugin="workflows", title="Approvals unavailable")  # type: ignore[no-any-return]

    async def request_approval(
        self,
        *,
        action: str,
        summary: str,
        department: str,
        permission: str,
        requester: Actor,
        expires_in: float = 24 * 3600,
        payload: Mapping[str, Any] | None = None,
        tenant_id: str | None = None,
        destructive: bool = False,
    ) -> ApprovalRequest:
        """Ask ``department`` to approve ``action``; the owner of the action runs it once approved."""
        return await self.approvals().request(
            action=action,
            summary=summary,
            department=department,
            permission=permission,
            requester=requester,
            expires_in=expires_in,
            payload=payload,
            tenant_id=tenant_id,
            destructive=destructive,
        )

    async def decide_approval(self, approval_id: str, *, approve: bool, actor: Actor, reason: str | None = None) -> ApprovalRequest:
        """Approve or reject a pending request as ``actor`` (who must hold its permission)."""
        return await self.approvals().decide(approval_id, approve=approve, actor=actor, reason=reason)

    # -- schedules and workflows ----------------------------------------------------------

    def workflows(self) -> Workflows:
        """Return the workflow engine (the workflows plugin); raise a clear error when none is enabled."""
        return self._require("workflow_engine", "the workflow engine", "workflows", plugin="workflows", title="Workflows unavailable")  # type: ignore[no-any-return]

    def has_workflow_engine(self) -> bool:
        """Return whether a workflow engine runs in this generation (schedules run only then)."""
        return bool(self.hook.workflow_engine.get_hookimpls())

    # -- notifications and staff commands ------------------------------------------------

    async def notify(self, notification: Notification, *, session: Any | None = None) -> None:
        """Hand a notification to the notifications plugin, durably when ``session`` is given.

        With ``session`` (a storage transaction) the request is written to the transactional outbox
        in that transaction: delivered at least once if it commits, never if it rolls back. Without
        a plugin that routes notifications, every ``send_notification`` implementation is called now.
        """
        # A router subscribes to the type by name; a "*" subscriber (an audit trail, outbound webhooks) does not route.
        if NotificationRequested.event_type not in self.events.named_types:
            await self.broadcast("send_notification", kernel=self, notification=notification)
            return
        # to_dict() is NotificationRequested's JSON dump already: no model to build and dump again on a write's path.
        payload = {"notification": notification.to_dict()}
        await self.events.publish_payload(NotificationRequested.event_type, payload, session=session, tenant_id=notification.tenant_id)

    async def resolve_recipients(self, address: str) -> list[Recipient]:
        """Return the active people behind ``address`` (``user:``, ``department:``, ``tenant:``); none when unknown."""
        found = await await_me_maybe(self.hook.resolve_recipients(kernel=self, address=address))
        return list(found or ())

    async def staff_commands(self) -> dict[str, StaffCommand]:
        """Return this generation's staff commands by name (the first plugin to declare a name keeps it)."""
        if "staff_commands" not in self._providers:
            commands: dict[str, StaffCommand] = {}
            for plugin, contributed in (await self.broadcast("register_staff_commands", kernel=self)).items():
                for command in contributed or ():
                    if command.name in commands:
                        log.error("plugin '%s' declares staff command '/%s' again; ignored", plugin, command.name)
                        continue
                    commands[command.name] = command
            self._providers["staff_commands"] = commands
        return self._providers["staff_commands"]  # type: ignore[no-any-return]

    async def run_staff_command(
        self, name: str, *, actor: Actor, arguments: Mapping[str, Any], channel: str, locale: str = "pt-BR"
    ) -> CommandReply:
        """Run a staff command for ``actor``: 404 unknown, 403 without its permission, 422 naming bad arguments."""
        command = (await self.staff_commands()).get(name)
        if command is None:
            raise ProblemError(404, "Unknown command", f"There is no staff command '/{name}'; GET /v1/staff/commands lists them.")
        if command.permission is not None and not actor.can(command.permission):
            raise ProblemError(403, "Forbidden", f"'/{name}' needs the permission '{command.permission}', which the caller does not hold.")
        parsed = None
        if command.arguments is not None:
            try:
                parsed = command.arguments.model_validate(dict(arguments))
            except ValidationError as error:
                problem = validation_problem(error, "arguments")
                raise ProblemError(422, "Invalid arguments", f"{problem.detail} Usage: {command.usage()}", errors=problem.errors) from None
        elif arguments:
            raise ProblemError(422, "Invalid arguments", f"'/{name}' takes no arguments. Usage: {command.usage()}")
        return await command.handler(CommandContext(kernel=self, actor=actor, channel=channel, arguments=parsed, locale=locale))

    def openapi(self) -> dict[str, Any]:
        if self._openapi is None:
            assert self.app is not None
            self._openapi = openapi_document(self.app.routes, title=self.config.kernel.title, version=__version__, kernel=self)
        return self._openapi

    # -- secrets and service principals -----------------------------------------------------

    def secret_box(self) -> SecretBox:
        """Return the secret box (the auth plugin provides it); raise a 503 problem when no plugin does."""
        return self._require("secret_box", "the secret box", "secret-box", plugin="auth", title="Secret box unavailable")  # type: ignore[no-any-return]

    async def reencrypt_secrets(self) -> dict[str, int | str]:
        """Ask every plugin to re-seal its values under the current key; return each one's count, or its error."""
        box = self.secret_box()
        outcome: dict[str, int | str] = {}
        for impl in reversed(self.hook.reencrypt_secrets.get_hookimpls()):
            try:
                count = await self.call_plugin(impl.plugin_name, "reencrypt_secrets", kernel=self, box=box)
            except PluginError as error:
                log.error("%s", error, exc_info=error.__cause__, extra={"plugin": impl.plugin_name, "hook": "reencrypt_secrets"})
                outcome[impl.plugin_name] = str(error)
            else:
                if count is not None:
                    outcome[impl.plugin_name] = int(count)
        return outcome

    async def service_actor(self, name: str) -> Actor:
        """Return the service principal that background work of ``name`` (a plugin or an agent) runs as.

        Without an identity plugin that knows ``name``, an actor with no permissions that still names it.
        """
        found = await await_me_maybe(self.hook.service_actor(kernel=self, name=name))
        if found is not None:
            return found  # type: ignore[no-any-return]
        return Actor(id=f"service:{name}", kind="service", attributes={"service": name})

    # -- audit and consent ----------------------------------------------------------------

    async def audit(
        self,
        action: str,
        *,
        actor: Actor | None = None,
        actor_id: str | None = None,
        actor_kind: str | None = None,
        tenant_id: str | None = None,
        target: str | None = None,
        outcome: str = "success",
        subject: str | None = None,
        request_id: str | None = None,
        client_address: str | None = None,
        details: Mapping[str, Any] | None = None,
        strict: bool = False,
    ) -> None:
        """Record an audit entry through every ``record_audit`` implementation (the audit plugin).

        ``actor`` fills ``actor_id``, ``actor_kind`` and ``tenant_id`` unless they are given. Pass
        pseudonymous ids, never e-mail addresses, and no secret in ``details``. Without a recorder
        the entry is dropped and the kernel logs that once per process. A recorder's failure is
        logged; with ``strict`` it is raised as well (after the other recorders ran), for work that
        must not go on unrecorded: retry the call.
        """
        if actor is not None:
            actor_id = actor_id or actor.id
            actor_kind = actor_kind or actor.kind
            tenant_id = tenant_id if tenant_id is not None else actor.tenant_id
        if not self.hook.record_audit.get_hookimpls():
            if not _AUDIT_WARNED:
                _AUDIT_WARNED.append(True)
                log.warning("no plugin records audit entries (enable the audit plugin); '%s' and later entries are not kept", action)
            return
        record = AuditRecord(
            action=action,
            actor_id=actor_id,
            actor_kind=actor_kind,
            tenant_id=tenant_id,
            target=target,
            outcome=outcome,
            subject=subject,
            request_id=request_id,
            client_address=client_address,
            details=dict(details or {}),
            occurred_at=datetime.now(UTC),
        )
        await self.broadcast("record_audit", strict=strict, kernel=self, record=record)

    async def has_consent(self, subject: DataSubject | str, purpose: str) -> bool:
        """Return whether ``subject`` (a :class:`DataSubject` or a user id) consents now to ``purpose``.

        Ask before processing that needs consent (marketing e-mail, analytics, sharing). Without a
        consent provider nothing was consented to: the answer is False.
        """
        person = subject if isinstance(subject, DataSubject) else DataSubject(user_id=subject)
        answer = await await_me_maybe(self.hook.has_consent(kernel=self, subject=person, purpose=purpose))
        return bool(answer)
