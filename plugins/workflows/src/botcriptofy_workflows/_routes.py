"""``/v1/admin/workflows`` and ``/v1/admin/schedules`` (configuration department)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from starlette.requests import Request

from botcriptofy import ProblemError, Route, kernel_of, require

from ._ops import act_on_schedule, cancel_workflow, list_schedules, list_workflows, show_schedule, show_workflow
from ._state import ENGINE

PERMISSION = "configuration:manage"
TAGS = ["admin"]


class WorkflowsQuery(BaseModel):
    status: Literal["running", "completed", "failed", "canceled", "terminated", "continued_as_new", "timed_out"] | None = None
    workflow: str | None = Field(None, max_length=200, description="Only this workflow type.")
    limit: int = Field(50, ge=1, le=500)


class WorkflowOut(BaseModel):
    id: str
    workflow: str
    status: str
    started_at: datetime | None
    closed_at: datetime | None
    task_queue: str | None
    run_id: str | None


class WorkflowDetailOut(WorkflowOut):
    history_length: int
    pending_activities: list[dict[str, Any]]


class CancelOut(BaseModel):
    id: str
    cancel_requested: bool


class ScheduleOut(BaseModel):
    id: str
    plugin: str | None
    registered: bool
    paused: bool
    note: str | None
    cron: list[str]
    interval_seconds: list[float]
    time_zone: str | None
    next_runs: list[str]
    recent_runs: list[dict[str, str]]
    runs: int
    skipped_overlapping: int


def _engine(request: Request) -> Any:
    kernel = kernel_of(request)
    engine = kernel.stash.get(ENGINE, None)
    if engine is None:
        raise ProblemError(503, "Workflows unavailable", "The workflow engine is not running.")
    return engine


async def workflows_index(request: Request, *, query: WorkflowsQuery) -> list[WorkflowOut]:
    await require(request, PERMISSION)
    found = await list_workflows(_engine(request), status=query.status, workflow=query.workflow, limit=query.limit)
    return [WorkflowOut(**item) for item in found]


async def workflow_show(request: Request) -> WorkflowDetailOut:
    await require(request, PERMISSION)
    return WorkflowDetailOut(**await show_workflow(_engine(request), request.path_params["workflow_id"]))


async def workflow_cancel(request: Request) -> CancelOut:
    await require(request, PERMISSION)
    return CancelOut(**await cancel_workflow(_engine(request), request.path_params["workflow_id"]))


async def schedules_index(request: Request) -> list[ScheduleOut]:
    await require(request, PERMISSION)
    return [ScheduleOut(**item) for item in await list_schedules(_engine(request))]


async def schedule_show(request: Request) -> ScheduleOut:
    await require(request, PERMISSION)
    return ScheduleOut(**await show_schedule(_engine(request), request.path_params["schedule_id"]))


def _schedule_action(action: str) -> Any:
    async def endpoint(request: Request) -> ScheduleOut:
        actor = await require(request, PERMISSION)
        return ScheduleOut(**await act_on_schedule(_engine(request), request.path_params["schedule_id"], action, by=actor.id))

    endpoint.__name__ = f"schedule_{action}"
    endpoint.__doc__ = f"{action.capitalize()} a schedule."
    return endpoint


def routes() -> list[Route]:
    errors = {401: "Unauthorized", 403: "Forbidden", 503: "Workflow engine not running"}
    found = {**errors, 404: "Unknown"}
    return [
        Route("/v1/admin/workflows", workflows_index, query=WorkflowsQuery, response=list[WorkflowOut], tags=TAGS, responses=errors),
        Route("/v1/admin/workflows/{workflow_id}", workflow_show, response=WorkflowDetailOut, tags=TAGS, responses=found),
        Route(
            "/v1/admin/workflows/{workflow_id}/cancel", workflow_cancel, methods=["POST"], response=CancelOut, tags=TAGS, responses=found
        ),
        Route("/v1/admin/schedules", schedules_index, response=list[ScheduleOut], tags=TAGS, responses=errors),
        Route("/v1/admin/schedules/{schedule_id}", schedule_show, response=ScheduleOut, tags=TAGS, responses=found),
        *[
            Route(
                f"/v1/admin/schedules/{{schedule_id}}/{action}",
                _schedule_action(action),
                methods=["POST"],
                response=ScheduleOut,
                tags=TAGS,
                responses=found,
            )
            for action in ("pause", "resume", "trigger")
        ],
    ]
