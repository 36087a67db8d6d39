"""BotCriptoFy lgpd plugin: consent ledger, data export, erasure with legal holds, request deadlines.

Hook implementations only; the logic lives in the private modules. See docs/lgpd.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from botcriptofy import DataSubject, Migrations, Permission, Schedule, ScheduledRun, SettingsSchema, hookimpl

from ._settings import SCHEMA, LgpdSettings, Purpose

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from botcriptofy import Kernel

__all__ = [
    "LgpdSettings",
    "Purpose",
    "erase_subject_data",
    "export_subject_data",
    "has_consent",
    "plugin_settings_schema",
    "register_migrations",
    "register_permissions",
    "register_routes",
    "register_schedules",
    "shutdown",
    "startup",
]
__version__ = "0.1.0"

MIGRATIONS = Path(__file__).parent / "migrations"
DEADLINES_SCHEDULE = "deadlines"


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SCHEMA


@hookimpl
def startup(kernel: Kernel) -> None:
    from ._runner import InProcessRunner
    from ._state import STATE, build_state

    state = build_state(kernel)
    runner = InProcessRunner(kernel)
    state.runner = runner
    kernel.stash[STATE] = state
    runner.start()


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    from ._state import STATE

    state = kernel.stash.get(STATE, None)
    if state is not None and state.runner is not None:
        await state.runner.stop()  # type: ignore[attr-defined]


@hookimpl
def register_migrations(kernel: Kernel) -> Migrations:
    from ._models import metadata

    return Migrations(directory=MIGRATIONS, metadata=metadata)


@hookimpl
def register_routes(kernel: Kernel) -> list[BaseRoute]:
    from ._routes import routes

    return routes()


@hookimpl
def register_schedules(kernel: Kernel) -> list[Schedule]:
    """The deadline sweep as a schedule: with a workflow engine it runs there, once per tick across workers.

    Without an engine nothing is registered (the in-process runner sweeps), so readiness does not
    report a schedule that was never meant to run.
    """
    from . import _requests
    from ._state import settings_of

    if not kernel.has_workflow_engine():
        return []

    async def sweep(run: ScheduledRun) -> dict[str, int]:
        return await _requests.sweep(kernel.current())

    interval = max(1.0, settings_of(kernel).sweep_interval)
    return [Schedule(DEADLINES_SCHEDULE, sweep, interval=interval, description="Privacy requests: resume, remind the DPO, flag overdue")]


@hookimpl
def register_permissions(kernel: Kernel) -> list[Permission]:
    return [
        Permission(
            "privacy:own", "Exercise your own privacy rights: consents, export, erasure, corrections.", frozenset({"trader", "influencer"})
        ),
        Permission("audit:privacy", "Act as the DPO: see and answer every privacy request.", frozenset({"audit:manager"})),
    ]


@hookimpl
async def has_consent(kernel: Kernel, subject: DataSubject, purpose: str) -> bool:
    from ._consents import has_consent as lookup
    from ._state import settings_of

    return await lookup(kernel.database(), settings_of(kernel), subject.user_id, purpose)


@hookimpl
async def export_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import export

    return await export(kernel, subject)


@hookimpl
async def erase_subject_data(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    from ._privacy import erase

    return await erase(kernel, subject)
