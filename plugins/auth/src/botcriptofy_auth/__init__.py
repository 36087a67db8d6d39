"""BotCriptoFy auth plugin: users, tenants, staff roles, passwords, JWT and rotating refresh tokens, API keys, TOTP, Google login.

Hook implementations only; the logic lives in the private modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute

from botcriptofy import Actor, DataSubject, Kernel, Migrations, SettingsSchema, hookimpl

from . import _events as events
from ._settings import SCHEMA, AuthSettings

__all__ = [
    "AuthSettings",
    "actor_from_request",
    "erase_subject_data",
    "events",
    "export_subject_data",
    "plugin_settings_schema",
    "register_commands",
    "register_migrations",
    "register_routes",
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
    for task in list(state.background):
        task.cancel()


@hookimpl
async def settings_changed(kernel: Kernel, previous: AuthSettings, current: AuthSettings, changed: frozenset[str]) -> None:
    from ._state import PRINCIPALS_TAG, state_of

    state = state_of(kernel)
    if changed & {"argon2_time_cost", "argon2_memory_cost", "argon2_parallelism"}:
        state.passwords.configure(
            time_cost=current.argon2_time_cost, memory_cost=current.argon2_memory_cost, parallelism=current.argon2_parallelism
        )
    if "extra_grants" in changed:
        await kernel.cache().invalidate_tags(PRINCIPALS_TAG)


@hookimpl
def register_routes(kernel: Kernel) -> list[BaseRoute]:
    from ._routes import routes

    return list(routes())


@hookimpl
async def actor_from_request(kernel: Kernel, request: Request) -> Actor | None:
    from ._principals import actor_from_request as resolve

    return await resolve(kernel, request)


@hookimpl
def register_migrations(kernel: Kernel) -> Migrations:
    from ._models import Base

    return Migrations(directory=MIGRATIONS, metadata=Base.metadata)


@hookimpl
def register_commands(cli: Any) -> None:
    from ._cli import users

    if "users" not in cli.commands:
        cli.add_command(users)


@hookimpl
async def export_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import export

    return await export(kernel, subject)


@hookimpl
async def erase_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import erase

    return await erase(kernel, subject)
