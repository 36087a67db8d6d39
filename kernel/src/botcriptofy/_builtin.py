"""The kernel's built-in plugin: health, readiness, the plugin list, OpenAPI and configuration admin.

It goes through the same hooks as every other plugin and cannot be disabled.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from ._errors import ConfigError, ProblemError
from ._http import Route, current_actor, kernel_of, require
from ._markers import hookimpl
from ._settings import mask_secrets

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from ._kernel import Kernel

ADMIN_PERMISSION = "configuration:manage"


class PluginOut(BaseModel):
    name: str
    version: str
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


class ConfigOut(BaseModel):
    version: int | None
    generation: int
    env: str
    settings: dict[str, Any]
    last_error: str | None


class ConfigCheckIn(BaseModel):
    files: dict[str, str] = Field(description="Settings files to check, by name (for example settings.toml), with their full text.")


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


class RollbackIn(BaseModel):
    version: int = Field(ge=1, description="The configuration version to restore.")


class ApplyOut(BaseModel):
    applied: bool
    version: int | None
    generation: int | None
    changes: dict[str, list[str]]
    error: str | None


async def health(request: Request) -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def ready(request: Request) -> JSONResponse:
    """Readiness: every plugin's health checks pass (database, Redis when configured)."""
    kernel = kernel_of(request)
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
            checks[f"{plugin}.{check.name}"] = CheckOut(
                status="fail" if failed else "ok", duration_ms=round((loop.time() - started) * 1000, 2), error=failed
            )
    healthy = all(c.status == "ok" for c in checks.values())
    body = ReadyOut(status="ok" if healthy else "unavailable", generation=kernel.generation, checks=checks)
    return JSONResponse(body.model_dump(), 200 if healthy else 503)


async def plugins(request: Request) -> PluginsOut:
    """Every known plugin: name, version, enabled, hooks implemented (refused plugins carry their error)."""
    import os

    kernel = kernel_of(request)
    listed = []
    for name, info in sorted(kernel.runtime.plugins.items()):
        listed.append(
            PluginOut(
                name=name,
                version=info.version,
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


async def openapi(request: Request) -> JSONResponse:
    """The OpenAPI document, generated from the models that validate requests."""
    return JSONResponse(kernel_of(request).openapi())


async def _admin(request: Request) -> None:
    """Allow configuration admins; with no identity plugin, allow only what ``kernel.admin_without_auth`` says."""
    kernel = kernel_of(request)
    if kernel.hook.actor_from_request.get_hookimpls():
        await require(request, ADMIN_PERMISSION)
        return
    if await current_actor(request) is None and kernel.kernel_settings.admin_without_auth == "loopback":
        host = request.client.host if request.client else ""
        try:
            if host == "testclient" or ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
    raise ProblemError(
        403,
        "Forbidden",
        "Configuration admin needs the auth plugin and the 'configuration:manage' permission; "
        "without an identity plugin it is open to loopback clients only.",
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
    history = kernel_of(request).runtime.history
    assert history is not None
    versions = await asyncio.to_thread(history.versions, 100)
    return [VersionOut(**v.summary()) for v in versions]


async def config_rollback(request: Request, body: RollbackIn) -> ApplyOut:
    """Re-apply an earlier configuration version."""
    await _admin(request)
    try:
        result = await kernel_of(request).runtime.rollback(body.version, source="api")
    except ConfigError as error:
        status = 404 if error.key == "version" else 422
        raise ProblemError(status, "Rollback refused", str(error)) from None
    if not result.applied and result.error:
        raise ProblemError(422, "Rollback refused", result.error)
    return ApplyOut(**result.__dict__)


async def plugins_rescan(request: Request) -> ApplyOut:
    """Look for newly installed plugins and apply them, here and (through the settings directory) in every worker."""
    await _admin(request)
    from ._kernel import request_rescan

    runtime = kernel_of(request).runtime
    result = await runtime.rescan(source="api")
    request_rescan(runtime.settings_dir)
    return ApplyOut(**result.__dict__)


@hookimpl
def register_routes(kernel: Kernel) -> list[BaseRoute]:
    tags = ["kernel"]
    admin = ["admin"]
    return [
        Route("/-/health", health, response=dict[str, str], tags=tags),
        Route("/-/ready", ready, tags=tags, responses={503: "A dependency is down"}),
        Route("/-/plugins", plugins, response=PluginsOut, tags=tags),
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
