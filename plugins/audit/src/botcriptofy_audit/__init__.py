"""BotCriptoFy audit plugin: an append-only, hash-chained, checkpoint-signed audit trail.

Hook implementations only; the logic lives in the private modules. See docs/audit.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from botcriptofy import Actor, AuditRecord, DataSubject, EventHandler, Migrations, Permission, ProblemError, SettingsSchema, hookimpl

from . import hookspecs
from ._settings import SCHEMA, AuditSettings

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from botcriptofy import Kernel

__all__ = [
    "AuditSettings",
    "audit_verify_chains",
    "erase_subject_data",
    "export_subject_data",
    "hookspecs",
    "plugin_settings_schema",
    "record_audit",
    "register_commands",
    "register_event_handlers",
    "register_hookspecs",
    "register_migrations",
    "register_permissions",
    "register_routes",
    "settings_changed",
    "startup",
]
__version__ = "0.2.0"

MIGRATIONS = Path(__file__).parent / "migrations"


@hookimpl
def register_hookspecs() -> list[Any]:
    return [hookspecs]


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SCHEMA


@hookimpl
async def startup(kernel: Kernel) -> None:
    from ._grants import secure
    from ._state import STATE, build_state

    kernel.stash[STATE] = build_state(kernel)
    # Storage re-grants every table to its row-level-security role after each upgrade: take UPDATE/DELETE back.
    await secure(kernel.database())


@hookimpl
def settings_changed(kernel: Kernel, previous: AuditSettings, current: AuditSettings, changed: frozenset[str]) -> None:
    from ._state import STATE, build_state

    kernel.stash[STATE] = build_state(kernel)


@hookimpl
def register_migrations(kernel: Kernel) -> Migrations:
    from ._models import metadata

    return Migrations(directory=MIGRATIONS, metadata=metadata)


@hookimpl
async def record_audit(kernel: Kernel, record: AuditRecord) -> None:
    from ._chain import append
    from ._state import state_of

    state = state_of(kernel)
    await append(kernel.current().database(), state.keyring, state.policy, record)


@hookimpl
def register_event_handlers(kernel: Kernel) -> list[EventHandler]:
    from ._recorders import handlers

    return handlers(kernel)


@hookimpl
def register_routes(kernel: Kernel) -> list[BaseRoute]:
    from ._routes import routes

    return routes()


@hookimpl
def register_permissions(kernel: Kernel) -> list[Permission]:
    return [
        Permission(
            "audit:read", "Read every tenant's audit trail, filtered and paginated.", frozenset({"audit:viewer", "security:viewer"})
        ),
        Permission("audit:verify", "Verify the audit chains and their signed checkpoints.", frozenset({"audit:member"})),
        Permission("audit:export", "Export the audit trail as signed JSON Lines.", frozenset({"audit:member"})),
    ]


@hookimpl
def register_commands(cli: Any) -> None:
    from ._cli import audit

    if "audit" not in cli.commands:
        cli.add_command(audit)


@hookimpl
async def export_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._service import export_subject

    return await export_subject(kernel.database(), subject)


@hookimpl
async def erase_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._service import erase_subject

    return await erase_subject(kernel.database(), subject)


@hookimpl
async def audit_verify_chains(kernel: Kernel, actor: Actor, chain: str | None) -> dict[str, Any]:
    """Verify the chains for ``actor`` (``audit:verify``) and record ``audit.verified`` under it."""
    from ._chain import verify
    from ._routes import VERIFY
    from ._state import state_of

    if not actor.can(VERIFY):
        raise ProblemError(403, "Forbidden", f"Verifying the audit chains needs '{VERIFY}'.")
    current = kernel.current()
    report = await verify(current.database(), state_of(current).keyring, chain=chain)
    await current.audit(
        "audit.verified",
        actor=actor,
        tenant_id=None,
        outcome="success" if report["valid"] else "failure",
        details={"chain": chain, "entries": report["entries"], "first_problem": report["first_problem"]},
    )
    return report
