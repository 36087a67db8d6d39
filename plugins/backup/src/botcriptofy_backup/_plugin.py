"""The hook implementations of the backup plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botcriptofy import Permission, Schedule, ScheduledRun, SettingsSchema, hookimpl

from ._metrics import BackupMetrics
from ._settings import SCHEMA

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from botcriptofy import Kernel

SCHEDULE_ID = "run"


class BackupPlugin:
    """Backs up the storage database (SQLite by default) and a PostgreSQL cluster through pgBackRest."""

    def __init__(self) -> None:
        self.metrics = BackupMetrics()

    @hookimpl
    def plugin_settings_schema(self) -> SettingsSchema:
        return SCHEMA

    @hookimpl
    async def startup(self, kernel: Kernel) -> None:
        from ._service import build
        from ._state import SERVICE

        service = build(kernel, self.metrics)
        kernel.stash[SERVICE] = service
        await service.refresh()

    @hookimpl
    def register_metrics(self, kernel: Kernel) -> list[Any]:
        return self.metrics.collectors()

    @hookimpl
    def register_schedules(self, kernel: Kernel) -> list[Schedule]:
        from ._state import service_of

        settings = kernel.settings_for("backup")

        async def run(scheduled: ScheduledRun) -> dict[str, Any]:
            return await service_of(kernel).tick()

        return [
            Schedule(
                SCHEDULE_ID,
                run,
                interval=settings.interval,
                overlap="skip",
                timeout=settings.schedule_timeout,
                description="Back up every database; notify the configuration department of failed and stale backups.",
            )
        ]

    @hookimpl
    def register_routes(self, kernel: Kernel) -> list[BaseRoute]:
        from ._routes import routes

        return routes()

    @hookimpl
    def register_permissions(self, kernel: Kernel) -> list[Permission]:
        from ._routes import READ, RESTORE

        return [
            Permission(READ, "List backups, back up now, verify backups and run restore drills.", frozenset({"configuration:member"})),
            Permission(RESTORE, "Restore a backup into a new location.", frozenset({"configuration:manager"})),
        ]

    @hookimpl
    def register_commands(self, cli: Any) -> None:
        from ._cli import backup

        if "backup" not in cli.commands:
            cli.add_command(backup)
