"""Operator actions on workflows and schedules, shared by the admin API and the command line."""

from __future__ import annotations

from typing import Any

from temporalio.service import RPCError, RPCStatusCode

from botcriptofy import ProblemError

from ._engine import Engine, describe_run, not_found

STATUSES = {
    "running": "Running",
    "completed": "Completed",
    "failed": "Failed",
    "canceled": "Canceled",
    "terminated": "Terminated",
    "continued_as_new": "ContinuedAsNew",
    "timed_out": "TimedOut",
}


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def run_data(run: Any) -> dict[str, Any]:
    return {
        "id": run.id,
        "workflow": run.workflow,
        "status": run.status,
        "started_at": run.started_at,
        "closed_at": run.closed_at,
        "task_queue": run.task_queue,
        "run_id": run.run_id,
    }


async def list_workflows(
    engine: Engine, *, status: str | None = None, workflow: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    clauses = []
    if status:
        clauses.append(f"ExecutionStatus = {_quote(STATUSES[status])}")
    if workflow:
        clauses.append(f"WorkflowType = {_quote(workflow)}")
    found = []
    async for listed in engine.client.list_workflows(" AND ".join(clauses) or None, limit=limit):
        found.append(run_data(describe_run(listed)))
    return found


async def show_workflow(engine: Engine, workflow_id: str) -> dict[str, Any]:
    try:
        description = await engine.client.get_workflow_handle(workflow_id).describe()
    except RPCError as error:
        if not_found(error):
            raise ProblemError(404, "Unknown workflow", f"There is no workflow '{workflow_id}'.") from None
        raise
    data = run_data(describe_run(description))
    data["history_length"] = description.history_length
    data["pending_activities"] = [
        {"activity": item.activity_type.name, "attempt": item.attempt, "last_failure": item.last_failure.message or None}
        for item in description.raw_description.pending_activities
    ]
    return data


async def cancel_workflow(engine: Engine, workflow_id: str) -> dict[str, Any]:
    if await engine.describe(workflow_id) is None:
        raise ProblemError(404, "Unknown workflow", f"There is no workflow '{workflow_id}'.")
    cancelled = await engine.cancel(workflow_id)
    return {"id": workflow_id, "cancel_requested": cancelled}


async def _describe_schedule(engine: Engine, schedule_id: str) -> dict[str, Any] | None:
    try:
        description = await engine.client.get_schedule_handle(schedule_id).describe()
    except RPCError as error:
        if not_found(error):
            return None
        raise
    memo = await description.memo()
    state = description.schedule.state
    spec = description.schedule.spec
    owner = memo.get("botcriptofy_plugin")
    return {
        "id": schedule_id,
        "plugin": owner,
        "registered": schedule_id in engine.registry.schedules,
        "paused": state.paused,
        "note": state.note,
        "cron": list(spec.cron_expressions),
        "interval_seconds": [item.every.total_seconds() for item in spec.intervals],
        "time_zone": spec.time_zone_name,
        "next_runs": [moment.isoformat() for moment in description.info.next_action_times[:3]],
        "recent_runs": [
            {"scheduled_at": item.scheduled_at.isoformat(), "started_at": item.started_at.isoformat()}
            for item in description.info.recent_actions[-5:]
        ],
        "runs": description.info.num_actions,
        "skipped_overlapping": description.info.num_actions_skipped_overlap,
    }


async def list_schedules(engine: Engine) -> list[dict[str, Any]]:
    ids = set(engine.registry.schedules)
    try:
        async for listed in await engine.client.list_schedules():
            ids.add(listed.id)
    except RPCError as error:
        if error.status != RPCStatusCode.UNIMPLEMENTED:
            raise
    found = [await _describe_schedule(engine, schedule_id) for schedule_id in sorted(ids)]
    return [item for item in found if item is not None]


async def show_schedule(engine: Engine, schedule_id: str) -> dict[str, Any]:
    found = await _describe_schedule(engine, schedule_id)
    if found is None:
        raise ProblemError(404, "Unknown schedule", f"There is no schedule '{schedule_id}'; list them with GET /v1/admin/schedules.")
    return found


async def act_on_schedule(engine: Engine, schedule_id: str, action: str, *, by: str) -> dict[str, Any]:
    await show_schedule(engine, schedule_id)
    handle = engine.client.get_schedule_handle(schedule_id)
    if action == "pause":
        # Not the note the engine uses for disabled plugins: an operator's pause survives re-enabling.
        await handle.pause(note=f"paused by {by}")
    elif action == "resume":
        await handle.unpause(note=f"resumed by {by}")
    elif action == "trigger":
        await handle.trigger()
    else:  # pragma: no cover - the callers offer only these three
        raise ValueError(action)
    return await show_schedule(engine, schedule_id)
