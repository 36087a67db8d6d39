"""BotCriptoFy auth plugin: users, tenants, staff roles, passwords, JWT and rotating refresh tokens, API keys, TOTP, Google login.

Hook implementations only; the logic lives in the private modules.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute

from botcriptofy import (
    Actor,
    ApprovalAction,
    DataSubject,
    Kernel,
    Migrations,
    Permission,
    Recipient,
    SecretBox,
    SettingsSchema,
    StaffCommand,
    hookimpl,
)

from . import _events as events
from . import _principals  # on every request's path: imported once here, not in the hook implementations
from ._settings import SCHEMA, AuthSettings

__all__ = [
    "AuthSettings",
    "actor_from_request",
    "business_metrics",
    "erase_subject_data",
    "events",
    "export_subject_data",
    "plugin_settings_schema",
    "reauthenticate",
    "reencrypt_secrets",
    "register_approval_actions",
    "register_commands",
    "register_migrations",
    "register_permissions",
    "register_routes",
    "register_security_schemes",
    "register_staff_commands",
    "resolve_recipients",
    "secret_box",
    "service_actor",
    "settings_changed",
    "shutdown",
    "startup",
]

MIGRATIONS = Path(__file__).parent / "migrations"


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SCHEMA


@hookimpl(trylast=True)
def startup(kernel: Kernel) -> None:
    from ._state import STATE, build_state

    kernel.stash[STATE] = build_state(kernel)


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    from ._state import STATE

    state = kernel.stash.get(STATE, None)
    if state is None:
        return
    state.passwords.close()
    if state.oidc is not None:
        await state.oidc.close()
    pending = list(state.background)
    for task in pending:
        task.cancel()
    if pending:  # password reset work and closing OIDC clients: cancelled, then awaited so none outlives the plugin
        import asyncio

        try:
            async with asyncio.timeout(5):
                await asyncio.gather(*pending, return_exceptions=True)
        except TimeoutError:
            pass


@hookimpl
async def settings_changed(kernel: Kernel, previous: AuthSettings, current: AuthSettings, changed: frozenset[str]) -> None:
    from ._state import PRINCIPALS_TAG, state_of

    state = state_of(kernel)
    if changed & {"argon2_time_cost", "argon2_memory_cost", "argon2_parallelism"}:
        state.passwords.configure(
            time_cost=current.argon2_time_cost, memory_cost=current.argon2_memory_cost, parallelism=current.argon2_parallelism
        )
    if "hash_queue_limit" in changed:
        state.passwords.queue_limit = current.hash_queue_limit
    if "extra_grants" in changed:
        await kernel.cache().invalidate_tags(PRINCIPALS_TAG)


@hookimpl
def register_permissions(kernel: Kernel) -> list[Permission]:
    from ._permissions import AUTH_PERMISSIONS
    from ._staff_commands import PERMISSIONS

    return [*AUTH_PERMISSIONS, *PERMISSIONS]


@hookimpl
def register_staff_commands(kernel: Kernel) -> list[StaffCommand]:
    from ._staff_commands import COMMANDS

    return list(COMMANDS)


@hookimpl
def register_approval_actions(kernel: Kernel) -> list[ApprovalAction]:
    from ._rank import approval_actions

    return approval_actions(kernel)


@hookimpl
async def business_metrics(kernel: Kernel, since: datetime, until: datetime) -> dict[str, int] | None:
    """``signups``: customer accounts (traders and influencers) created in ``[since, until)``."""
    if not kernel.has_database():
        return None
    from ._figures import signups

    return {"signups": await signups(kernel, since, until)}


@hookimpl
def secret_box(kernel: Kernel) -> SecretBox:
    from ._state import state_of

    return state_of(kernel).cipher


@hookimpl
async def reencrypt_secrets(kernel: Kernel, box: SecretBox) -> int:
    from ._accounts import rotate_field_keys

    return await rotate_field_keys(kernel)


@hookimpl
async def service_actor(kernel: Kernel, name: str) -> Actor | None:
    from ._principals import service_actor as resolve

    return await resolve(kernel, name)


@hookimpl
def register_routes(kernel: Kernel) -> list[BaseRoute]:
    from ._routes import routes

    return list(routes())


@hookimpl
def register_security_schemes(kernel: Kernel) -> dict[str, dict[str, Any]]:
    """The credentials ``actor_from_request`` accepts, for ``/openapi.json``."""
    return {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "An access token from /v1/auth/login."},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key from /v1/auth/api-keys."},
    }


@hookimpl
async def actor_from_request(kernel: Kernel, request: Request) -> Actor | None:
    return await _principals.actor_from_request(kernel, request)


@hookimpl
async def cached_actor(kernel: Kernel, request: Request) -> Actor | None:
    return await _principals.cached_actor(kernel, request)


@hookimpl
def register_migrations(kernel: Kernel) -> Migrations:
    from ._models import Base

    return Migrations(directory=MIGRATIONS, metadata=Base.metadata)


@hookimpl
def register_commands(cli: Any) -> None:
    from ._cli import permissions, secrets, users

    if "users" not in cli.commands:
        cli.add_command(users)
    if "permissions" not in cli.commands:
        cli.add_command(permissions)
    if "secrets" not in cli.commands:
        cli.add_command(secrets)


@hookimpl
async def export_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import export

    return await export(kernel, subject)


@hookimpl
async def erase_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import erase

    return await erase(kernel, subject)


@hookimpl
async def reauthenticate(kernel: Kernel, actor: Actor, credentials: dict[str, str]) -> bool | None:
    from ._reauth import reauthenticate as check

    return await check(kernel, actor, credentials)


@hookimpl
async def resolve_recipients(kernel: Kernel, address: str) -> list[Recipient] | None:
    if address.startswith("email:"):
        from ._staff_commands import resolve_email

        return await resolve_email(kernel, address[len("email:") :])
    from ._recipients import resolve

    return await resolve(kernel, address)
