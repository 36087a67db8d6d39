"""The generic scheduled report: gather with the owner's activity, then deliver through ``kernel.notify()``.

Input: ``{"gather": <activity name>, "params": {...}, "recipient": "department:finance", "subject": ...,
"channel": null}``. The gather activity returns ``{"body": str, ...}`` (or a string).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botcriptofy import Activity, Notification, Workflow, WorkflowContext

if TYPE_CHECKING:
    from botcriptofy import Kernel

REPORT_WORKFLOW = "workflows.scheduled-report"
DELIVER_ACTIVITY = "workflows.deliver-report"


async def scheduled_report(context: WorkflowContext, input: Mapping[str, Any]) -> Any:
    gathered = await context.activity(str(input["gather"]), input.get("params") or {})
    body = gathered.get("body", "") if isinstance(gathered, Mapping) else str(gathered)
    await context.activity(
        DELIVER_ACTIVITY,
        {
            "recipient": input["recipient"],
            "subject": input.get("subject") or "Report",
            "body": body,
            "channel": input.get("channel"),
            "data": gathered if isinstance(gathered, Mapping) else {},
            "report_id": context.workflow_id,
        },
    )
    return gathered


def report_contributions(kernel: Kernel) -> list[Workflow | Activity]:
    async def deliver(input: Mapping[str, Any]) -> dict[str, str]:
        notification = Notification(
            recipient=str(input["recipient"]),
            subject=str(input["subject"]),
            body=str(input["body"]),
            channel=input.get("channel"),
            data={**dict(input.get("data") or {}), "report_id": input.get("report_id")},
        )
        await kernel.current().notify(notification)
        return {"delivered_to": notification.recipient}

    return [
        Workflow(REPORT_WORKFLOW, scheduled_report, description="Gather a report with an activity and send it as a notification."),
        Activity(DELIVER_ACTIVITY, deliver, timeout=60),
    ]
