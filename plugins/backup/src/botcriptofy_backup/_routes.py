"""``/v1/admin/backups``: list, back up now, verify, restore to a new location, drill (configuration department)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.routing import BaseRoute

from botcriptofy import ProblemError, Route, current_actor, kernel_of

from ._keys import BackupKeyError
from ._pgbackrest import PgBackRestError
from ._service import UnknownDatabase
from ._sqlite import BackupError
from ._state import service_of

READ = "configuration:backups"
RESTORE = "configuration:backups_restore"
NAME = r"^[A-Za-z0-9_.-]{1,64}$"
BACKUP_ID = r"^[A-Za-z0-9_.-]{1,160}$"


def unknown(field: str, error: Exception, where: str = "body") -> ProblemError:
    return ProblemError(
        404,
        "Not found",
        str(error).strip("'\""),
        errors=[{"field": field, "message": str(error).strip("'\""), "type": "not_found", "in": where}],
    )


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: str | None = Field(None, pattern=NAME, description="Only this database.")


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: str | None = Field(None, pattern=NAME, description="Only this database (default: every one).")
    type: Literal["full", "diff", "incr"] | None = Field(
        None, description="PostgreSQL backup type (default: chosen by age); SQLite is always full."
    )


class VerifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: str | None = Field(None, pattern=NAME)
    backup: str | None = Field(None, pattern=BACKUP_ID, description="One SQLite backup (default: every one).")


class RestoreBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: str = Field(..., pattern=NAME)
    target: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
        description="Name of the new SQLite file or PostgreSQL directory, created under backup.restore_directory.",
    )
    backup: str | None = Field(None, pattern=BACKUP_ID, description="Backup id (default: the latest).")
    type: Literal["default", "time", "immediate"] = Field(
        "default", description="PostgreSQL: end of archive, a point in time, or the backup's end."
    )
    target_time: datetime | None = Field(None, description="PostgreSQL point-in-time target (with type 'time').")

    @field_validator("target_time")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time zone (2026-01-31T12:00:00Z)")
        return value


class DrillBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: str | None = Field(None, pattern=NAME)


async def list_backups(request: Request, *, query: ListQuery) -> dict[str, Any]:
    """The backed-up databases with their last success and staleness, and their backups, newest first."""
    service = service_of(kernel_of(request))
    try:
        backups = await service.listing(query.database)
    except UnknownDatabase as error:
        raise unknown("database", error, "query") from None
    return {"databases": service.status(), "backups": backups}


async def run_now(request: Request, *, body: RunBody) -> dict[str, Any]:
    """Back up now; each database's outcome is reported (a failure is also notified and counted)."""
    service = service_of(kernel_of(request))
    try:
        results = await service.run(body.database, body.type)
    except UnknownDatabase as error:
        raise unknown("database", error) from None
    return {"ok": all(item["ok"] for item in results), "results": results}


async def verify(request: Request, *, body: VerifyBody) -> dict[str, Any]:
    """Verify backups: SQLite ones are decrypted and integrity-checked, the pgBackRest repository is read back."""
    service = service_of(kernel_of(request))
    try:
        return await service.verify(body.database, body.backup)
    except UnknownDatabase as error:
        raise unknown("database", error) from None
    except LookupError as error:
        raise unknown("backup", error) from None
    except ValueError as error:
        raise ProblemError(
            422, "Invalid request", str(error), errors=[{"field": "backup", "message": str(error), "type": "value_error", "in": "body"}]
        ) from None


def occupied(target: Path) -> bool:
    return target.exists() and (target.is_file() or any(target.iterdir()))


async def restore(request: Request, *, body: RestoreBody) -> dict[str, Any]:
    """Restore into a new location (never over the live database); the operator switches over."""
    kernel = kernel_of(request)
    service = service_of(kernel)
    target = service.restore_root() / body.target
    if occupied(target):
        raise ProblemError(
            409,
            "Target exists",
            f"{target} exists and is not empty",
            errors=[{"field": "target", "message": "exists", "type": "conflict", "in": "body"}],
        )
    kind = "time" if body.target_time is not None and body.type == "default" else body.type
    try:
        result = await service.restore(body.database, target, backup_id=body.backup, kind=kind, target_time=body.target_time)
    except UnknownDatabase as error:
        raise unknown("database", error) from None
    except LookupError as error:
        raise unknown("backup", error) from None
    except (BackupError, BackupKeyError, PgBackRestError) as error:
        raise ProblemError(
            422, "Cannot restore", str(error), errors=[{"field": "backup", "message": str(error), "type": "restore_failed", "in": "body"}]
        ) from None
    except ValueError as error:
        raise ProblemError(
            422, "Invalid request", str(error), errors=[{"field": "type", "message": str(error), "type": "value_error", "in": "body"}]
        ) from None
    await kernel.audit(
        "backup.restored",
        actor=await current_actor(request),
        target=f"backup:{body.database}",
        details={"to": str(target), "type": kind, "backup": body.backup or "latest"},
    )
    return result


async def drill(request: Request, *, body: DrillBody) -> dict[str, Any]:
    """Restore the latest backup to a scratch location, compare row counts per table with the source, report the RTO."""
    service = service_of(kernel_of(request))
    try:
        return await service.drill(body.database)
    except UnknownDatabase as error:
        raise unknown("database", error) from None


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/admin/backups", list_backups, query=ListQuery, permission=READ, tags=["backup"], name="backup_list"),
        Route("/v1/admin/backups", run_now, methods=["POST"], body=RunBody, permission=READ, tags=["backup"], name="backup_run"),
        Route(
            "/v1/admin/backups/verify", verify, methods=["POST"], body=VerifyBody, permission=READ, tags=["backup"], name="backup_verify"
        ),
        Route(
            "/v1/admin/backups/restore",
            restore,
            methods=["POST"],
            body=RestoreBody,
            permission=RESTORE,
            tags=["backup"],
            name="backup_restore",
            responses={409: "The target exists"},
        ),
        Route("/v1/admin/backups/drill", drill, methods=["POST"], body=DrillBody, permission=READ, tags=["backup"], name="backup_drill"),
    ]
