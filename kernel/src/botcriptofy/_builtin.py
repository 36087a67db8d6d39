"""The kernel's built-in plugin: health, readiness, the plugin list, OpenAPI and configuration admin.

It goes through the same hooks as every other plugin and cannot be disabled.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import _edge, _idempotency
from ._errors import ConfigError, ProblemError
from ._http import Route, current_actor, is_local_client, kernel_of, operations_allowed, require
from ._markers import hookimpl
from ._runtime import installed_versions, request_rescan
from ._settings import mask_secrets, settings_file_name
from ._types import ApprovalAction, ApprovalRequest, HealthCheck

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from ._kernel import Kernel
    from ._types import Middleware

ADMIN_PERMISSION = "configuration:manage"


class PluginOut(BaseModel):
    name: str
    version: str = Field(description="The version running in this worker.")
    installed_version: str = Field(description="The version installed now; differs from version until the workers restart.")
    restart_pending: bool = Field(description="True when the installed version is not the one running: run `botcriptofy restart`.")
    enabled: bool
    builtin: bool
    distribution: str | None
    kernel_requirement: str | None
    hooks: list[str]
    live_settings: list[str]
    error: str | None


class PluginsOut(BaseModel):
    generation: int
    config_version: int | None
    pid: int
    plugins: list[PluginOut]


class CheckOut(BaseModel):
    status: str
    duration_ms: float
    error: str | None = None


class ReadyOut(BaseModel):
    status: str
    generation: int
    checks: dict[str, CheckOut]
    notes: dict[str, str] = Field(
        default_factory=dict,
        description="What readiness does not fail on but an operator must see: configuration drift, fleet versions this host refused.",
    )


class ConfigOut(BaseModel):
    version: int | None
    generation: int
    env: str
    settings: dict[str, Any]
    last_error: str | None


class ConfigCheckIn(BaseModel):
    files: dict[Annotated[str, AfterValidator(settings_file_name)], str] = Field(
        description="Settings files to check, by name (for example settings.toml), with their full text (plain TOML)."
    )


class ConfigCheckOut(BaseModel):
    valid: bool
    error: str | None = None
    file: str | None = None
    key: str | None = None


class VersionOut(BaseModel):
    version: int
    applied_at: str
    source: str
    note: str
    diff: dict[str, Any]
    actor: str = Field("", description="Who made the version (fleet mode).")


class FleetOut(BaseModel):
    current_version: int | None = Field(description="The fleet's current configuration version.")
    heartbeat_timeout: float = Field(description="Seconds after which a silent worker drops out of the list.")
    hosts: list[dict[str, Any]] = Field(
        description="Every host with its workers: config version, plugins running and installed (restart_pending), "
        "last heartbeat, versions refused with the reason, drift."
    )


class RollbackIn(BaseModel):
    version: int = Field(ge=1, description="The configuration version to restore.")


class ApplyOut(BaseModel):
    applied: bool
    version: int | None
    generation: int | None
    changes: dict[str, list[str]]
    error: str | None
    refused: dict[str, str] = Field(default_factory=dict, description="Plugins refused while applying, with the reason.")


async def health(request: Request) -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


def check_name(plugin: str, name: str) -> str:
    """Name a readiness check ``<plugin>.<name>``; a name the plugin already prefixed with ``<plugin>.`` is kept."""
    return name if name.startswith(f"{plugin}.") else f"{plugin}.{name}"


async def ready(request: Request) -> JSONResponse:
    """Readiness: every plugin's health checks pass (database, Redis when configured).

    Probes arriving while this worker runs the checks share that run (one at a time per generation):
    ``/-/ready`` is exempt from rate limiting, and each run reaches the database and Redis. No result
    is kept once its run ends, so every answer is as fresh as the run it waited for.
    """
    kernel = kernel_of(request)
    pending = _checking.get(kernel)
    if pending is None:
        pending = _checking[kernel] = asyncio.ensure_future(_run_checks(kernel))
        pending.add_done_callback(lambda _: _checking.pop(kernel, None))
    checks = await asyncio.shield(pending)
    healthy = all(c.status == "ok" for c in checks.values())
    status = "ok" if healthy else "unavailable"
    if not await operations_allowed(request):
        # Restricted: load balancers still get the verdict, only the details are withheld.
        return JSONResponse({"status": status}, 200 if healthy else 503)
    body = ReadyOut(status=status, generation=kernel.generation, checks=checks, notes=kernel.runtime.fleet_notes())
    return JSONResponse(body.model_dump(), 200 if healthy else 503)


_checking: weakref.WeakKeyDictionary[Kernel, asyncio.Future[dict[str, CheckOut]]] = weakref.WeakKeyDictionary()


async def _run_checks(kernel: Kernel) -> dict[str, CheckOut]:
    checks: dict[str, CheckOut] = {}
    for plugin, contributed in (await kernel.broadcast("health_checks", kernel=kernel)).items():
        for check in contributed or ():
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                result = check.check()
                if asyncio.iscoroutine(result):
                    result = await asyncio.wait_for(result, check.timeout)
                failed = None if result is None or result else "check returned a falsy value"
            except Exception as error:
                failed = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            checks[check_name(plugin, check.name)] = CheckOut(
                status="fail" if failed else "ok", duration_ms=round((loop.time() - started) * 1000, 2), error=failed
            )
    for plugin, reason in kernel.runtime.not_ready().items():
        # Enabled in the settings but not started in this worker (it is retried): not ready.
        checks[f"{plugin}.started"] = CheckOut(status="fail", duration_ms=0.0, error=reason)
    return checks


async def plugins(request: Request) -> PluginsOut:
    """Every known plugin: name, version, enabled, hooks implemented (refused plugins carry their error)."""
    import os

    kernel = kernel_of(request)
    listed = []
    known = dict(kernel.runtime.plugins)  # a rescan may change the runtime's while the versions are read
    versions = await asyncio.to_thread(installed_versions, list(known.values()))
    for name, info in sorted(known.items()):
        installed = versions[name]
        listed.append(
            PluginOut(
                name=name,
                version=info.running_version,
                installed_version=installed,
                restart_pending=installed != info.running_version,
                enabled=name in kernel.plugins,
                builtin=info.builtin,
                distribution=info.distribution,
                kernel_requirement=info.kernel_requirement,
                hooks=list(info.hooks),
                live_settings=sorted(info.live_keys),
                error=info.error,
            )
        )
    return PluginsOut(generation=kernel.generation, config_version=kernel.config_version, pid=os.getpid(), plugins=listed)


async def openapi(request: Request) -> Response:
    """The OpenAPI document, generated from the models that validate requests (encoded once per generation)."""
    kernel = kernel_of(request)
    body = _openapi_bodies.get(kernel)
    if body is None:
        body = _openapi_bodies[kernel] = bytes(JSONResponse(kernel.openapi()).body)  # ~270 KB: 3 ms to encode each time
    return Response(body, media_type="application/json")


_openapi_bodies: weakref.WeakKeyDictionary[Kernel, bytes] = weakref.WeakKeyDictionary()


async def _admin(request: Request) -> None:
    """Allow configuration admins; with no identity plugin, allow only what ``kernel.admin_without_auth`` says."""
    kernel = kernel_of(request)
    if kernel.hook.actor_from_request.get_hookimpls():
        await require(request, ADMIN_PERMISSION)
        return
    if await current_actor(request) is None and kernel.kernel_settings.admin_without_auth == "loopback" and is_local_client(request):
        return
    raise ProblemError(
        403,
        "Forbidden",
        "Configuration admin needs the auth plugin and the 'configuration:manage' permission; "
        "without an identity plugin it is open to loopback clients only, and never through a proxy "
        "(a request with proxy headers, or any request once kernel.trusted_proxies is set).",
    )


async def config_show(request: Request) -> ConfigOut:
    """The applied configuration, secrets masked."""
    await _admin(request)
    kernel = kernel_of(request)
    return ConfigOut(
        version=kernel.config_version,
        generation=kernel.generation,
        env=kernel.env,
        settings=mask_secrets(kernel.settings),
        last_error=kernel.runtime.last_error,
    )


async def config_check(request: Request, body: ConfigCheckIn) -> ConfigCheckOut:
    """Validate settings files without applying them."""
    await _admin(request)
    try:
        kernel_of(request).runtime.check_files(body.files)
    except ConfigError as error:
        return ConfigCheckOut(valid=False, error=str(error), file=error.file, key=error.key)
    return ConfigCheckOut(valid=True)


async def config_history(request: Request) -> list[VersionOut]:
    """Applied configurations, newest first, with source and diff."""
    await _admin(request)
    runtime = kernel_of(request).runtime
    if runtime.store is not None:
        return [VersionOut(**v.summary()) for v in await runtime.store.history(100)]
    history = runtime.history
    assert history is not None
    versions = await asyncio.to_thread(history.versions, 100)
    return [VersionOut(**v.summary()) for v in versions]


async def _actor_name(request: Request) -> str:
    actor = await current_actor(request)
    return actor.id if actor is not None else f"loopback:{request.client.host if request.client else '-'}"


async def config_apply(request: Request, body: ConfigCheckIn) -> ApplyOut:
    """Validate settings files once and apply them (fleet mode: as the fleet's next version, applied by every host)."""
    await _admin(request)
    try:
        result = await kernel_of(request).runtime.apply_files(body.files, source="api", actor=await _actor_name(request))
    except ConfigError as error:
        raise ProblemError(
            422, "Configuration refused", str(error), errors=[{"field": "files", "message": str(error), "type": "config", "in": "body"}]
        ) from None
    if not result.applied and result.error:
        raise ProblemError(422, "Configuration refused", result.error)
    return ApplyOut(**result.__dict__)


async def fleet_status(request: Request) -> FleetOut:
    """The hosts sharing this configuration (fleet mode): versions, plugins, heartbeats and refusals."""
    await _admin(request)
    store = kernel_of(request).runtime.store
    if store is None:
        raise ProblemError(
            404,
            "Not in fleet mode",
            "This host is in single-host mode: no plugin provides a shared configuration store (see the fleet plugin).",
        )
    return FleetOut(**await store.status())


async def config_rollback(request: Request, body: RollbackIn) -> ApplyOut:
    """Re-apply an earlier configuration version."""
    await _admin(request)
    try:
        result = await kernel_of(request).runtime.rollback(body.version, source="api", actor=await _actor_name(request))
    except ConfigError as error:
        status = 404 if error.key == "version" else 422
        raise ProblemError(status, "Rollback refused", str(error)) from None
    if not result.applied and result.error:
        raise ProblemError(422, "Rollback refused", result.error)
    return ApplyOut(**result.__dict__)


async def plugins_rescan(request: Request) -> ApplyOut:
    """Look for newly installed plugins and apply them, here and (through the settings directory) in every worker."""
    await _admin(request)
    kernel = kernel_of(request)
    runtime = kernel.runtime
    result = await runtime.rescan(source="api")
    request_rescan(kernel.current().state_dir)
    return ApplyOut(**result.__dict__)


@hookimpl
def register_routes(kernel: Kernel) -> list[BaseRoute]:
    tags = ["kernel"]
    admin = ["admin"]
    return [
        Route("/-/health", health, response=dict[str, str], tags=tags),
        Route("/-/ready", ready, tags=tags, responses={503: "A dependency is down"}),
        Route("/-/plugins", plugins, response=PluginsOut, tags=tags, operations=True),
        Route("/openapi.json", openapi, include_in_schema=False),
        Route("/v1/admin/config", config_show, response=ConfigOut, tags=admin, responses={403: "Forbidden"}),
        Route(
            "/v1/admin/config/check",
            config_check,
            methods=["POST"],
            body=ConfigCheckIn,
            response=ConfigCheckOut,
            tags=admin,
            max_body=4 * 1024 * 1024,
            responses={403: "Forbidden"},
        ),
        Route(
            "/v1/admin/config/apply",
            config_apply,
            methods=["POST"],
            body=ConfigCheckIn,
            response=ApplyOut,
            tags=admin,
            max_body=4 * 1024 * 1024,
            responses={403: "Forbidden", 422: "Refused"},
        ),
        Route("/v1/admin/fleet", fleet_status, response=FleetOut, tags=admin, responses={403: "Forbidden", 404: "Not in fleet mode"}),
        Route("/v1/admin/config/history", config_history, response=list[VersionOut], tags=admin, responses={403: "Forbidden"}),
        Route(
            "/v1/admin/config/rollback",
            config_rollback,
            methods=["POST"],
            body=RollbackIn,
            response=ApplyOut,
            tags=admin,
            responses={403: "Forbidden", 404: "No such version"},
        ),
        Route("/v1/admin/plugins/rescan", plugins_rescan, methods=["POST"], response=ApplyOut, tags=admin, responses={403: "Forbidden"}),
    ]


@hookimpl
def register_middleware(kernel: Kernel) -> list[Middleware]:
    """The edge (security headers, 503s, disconnects), CORS when configured, and idempotent retries."""
    return [*_edge.edge_middleware(kernel), _idempotency.idempotency_middleware(kernel)]


@hookimpl
def register_metrics(kernel: Kernel) -> list[Any]:
    return [_edge.unavailable_counter(kernel)]


# -- schedules without an engine, and rollbacks through approvals ----------------------------

ROLLBACK_ACTION = "config.rollback"


@hookimpl
async def health_checks(kernel: Kernel) -> list[HealthCheck]:
    """Report registered schedules as not running when no workflow engine is enabled: nothing is dropped silently."""
    if kernel.has_workflow_engine():
        return []
    owned = await kernel.broadcast("register_schedules", kernel=kernel)
    names = sorted(f"{plugin}.{schedule.id}" for plugin, schedules in owned.items() for schedule in schedules or ())
    if not names:
        return []

    def not_running() -> None:
        raise RuntimeError(
            f"{len(names)} schedule(s) not running ({', '.join(names)}): no workflows plugin is enabled; "
            "enable it (remove it from plugins.disabled)"
        )

    return [HealthCheck("schedules", not_running)]


@hookimpl
def register_approval_actions(kernel: Kernel) -> list[ApprovalAction]:
    """Let staff channels request a configuration rollback that a configuration manager approves."""

    async def rollback(approval: ApprovalRequest) -> dict[str, Any]:
        version = approval.payload.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ProblemError(422, "Rollback refused", f"payload.version must be a configuration version number, not {version!r}")
        try:
            result = await kernel.current().runtime.rollback(version, source="approval")
        except ConfigError as error:
            raise ProblemError(404 if error.key == "version" else 422, "Rollback refused", str(error)) from None
        if not result.applied and result.error:
            raise ProblemError(422, "Rollback refused", result.error)
        return {"applied": result.applied, "version": result.version, "generation": result.generation}

    return [
        ApprovalAction(
            ROLLBACK_ACTION,
            rollback,
            description="Restore an earlier configuration version (payload: {version}).",
            destructive=True,
        )
    ]
