"""Dunning reminders: past_due → reminders at 24, 72 and 168 hours, cancelled as soon as the invoice is paid.

A durable workflow per unpaid invoice (``billing.dunning.<invoice id>``) runs on the workflow engine
through the kernel; billing never imports the engine. A failed payment starts it (again and again
as Stripe retries: the same id finds the running one); a paid invoice signals it to stop.

Reminders can be paused (for every tenant, e.g. while the payment processor fails, or for one) by the
approval action ``billing.pause_dunning``: a reminder due during a pause is skipped, not delayed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select

from botcriptofy import (
    Activity,
    ApprovalAction,
    ApprovalRequest,
    Envelope,
    EventHandler,
    Notification,
    ProblemError,
    Workflow,
    WorkflowContext,
)

from ._models import DunningPause
from ._service import now

if TYPE_CHECKING:
    from botcriptofy import Kernel

DUNNING_WORKFLOW = "billing.dunning"
REMINDER_ACTIVITY = "billing.dunning-reminder"
REMINDER_HOURS = (24, 72, 168)
PAID_SIGNAL = "paid"
PAUSE_ACTION = "billing.pause_dunning"
MAX_PAUSE_HOURS = 168


def dunning_id(invoice_id: str) -> str:
    return f"billing.dunning.{invoice_id}"


async def dunning(context: WorkflowContext, input: Mapping[str, Any]) -> dict[str, Any]:
    """Wait for the payment; remind the tenant at each mark it has not come by."""
    sent: list[int] = []
    elapsed = 0
    for hours in REMINDER_HOURS:
        paid = await context.wait_for_signal(PAID_SIGNAL, timeout=(hours - elapsed) * 3600)
        if paid is not None:
            return {"outcome": "paid", "reminders": sent}
        elapsed = hours
        await context.activity(REMINDER_ACTIVITY, {**input, "hours": hours})
        sent.append(hours)
    return {"outcome": "reminded", "reminders": sent}


def contributions(kernel: Kernel) -> list[Workflow | Activity]:
    async def remind(input: Mapping[str, Any]) -> dict[str, Any]:
        until = await paused_until(kernel.current(), str(input["tenant_id"]))
        if until is not None:
            return {"paused_until": until, "tenant_id": input["tenant_id"], "hours": input["hours"]}
        amount = input.get("amount_due") or {}
        due = f"{amount.get('currency', '').upper()} {int(amount.get('amount_minor', 0)) / 100:.2f}".strip()
        await kernel.current().notify(
            Notification(
                recipient=f"tenant:{input['tenant_id']}",
                subject="Payment overdue",
                body=f"The payment of invoice {input['invoice_id']} ({due}) failed {input['hours']} hours ago. "
                "Update your payment method to keep your plan.",
                severity="warning",
                data={"kind": "billing.dunning", "invoice_id": input["invoice_id"], "hours": input["hours"]},
            )
        )
        return {"reminded": input["tenant_id"], "hours": input["hours"]}

    return [
        Workflow(DUNNING_WORKFLOW, dunning, description="Remind a tenant of an unpaid invoice at 24, 72 and 168 hours."),
        Activity(REMINDER_ACTIVITY, remind, timeout=60),
    ]


def event_handlers(kernel: Kernel) -> list[EventHandler]:
    """Start dunning on a failed payment, stop it on a paid invoice (retried by the outbox while no engine runs)."""

    async def payment_failed(envelope: Envelope) -> None:
        payload = envelope.payload
        await (
            kernel.current()
            .workflows()
            .start(
                DUNNING_WORKFLOW,
                id=dunning_id(str(payload["invoice_id"])),
                input={
                    "tenant_id": payload["tenant_id"],
                    "invoice_id": payload["invoice_id"],
                    "subscription_id": payload.get("subscription_id"),
                    "amount_due": payload.get("amount_due") or {},
                },
            )
        )

    async def payment_succeeded(envelope: Envelope) -> None:
        invoice_id = str(envelope.payload["invoice_id"])
        await kernel.current().workflows().signal(dunning_id(invoice_id), PAID_SIGNAL, {"invoice_id": invoice_id})

    return [
        EventHandler("billing.dunning-start", payment_failed, events=("billing.payment_failed",)),
        EventHandler("billing.dunning-stop", payment_succeeded, events=("billing.payment_succeeded",)),
    ]


async def paused_until(kernel: Kernel, tenant_id: str) -> int | None:
    """The end (Unix seconds) of the latest pause of reminders covering ``tenant_id`` now, or None."""
    if not kernel.has_database():
        return None
    async with kernel.database().session(system=True) as session:
        found = await session.execute(
            select(DunningPause.until).where(
                DunningPause.until > now(), or_(DunningPause.scope_tenant.is_(None), DunningPause.scope_tenant == tenant_id)
            )
        )
        ends = [int(v) for v in found.scalars()]
    return max(ends) if ends else None


def approval_actions(kernel: Kernel) -> list[ApprovalAction]:
    async def pause(approval: ApprovalRequest) -> dict[str, Any]:
        """Record the pause under the approval's id (a repeated try finds it and changes nothing)."""
        current = kernel.current()
        if not current.has_database():
            raise ProblemError(409, "Storage not enabled", "Pausing dunning needs the storage plugin's database.")
        payload = approval.payload
        try:
            hours = int(payload.get("hours", 24))
        except (TypeError, ValueError):
            raise ProblemError(422, "Invalid pause", "hours must be a whole number of hours.") from None
        if not 1 <= hours <= MAX_PAUSE_HOURS:
            raise ProblemError(422, "Invalid pause", f"hours must be between 1 and {MAX_PAUSE_HOURS}.")
        tenant = payload.get("tenant_id")
        async with current.database().session(system=True, write_lock=True) as session:
            row = await session.get(DunningPause, approval.id)
            if row is None:
                stamp = now()
                row = DunningPause(
                    id=approval.id,
                    scope_tenant=str(tenant) if tenant else None,
                    until=stamp + hours * 3600,
                    reason=str(payload.get("reason") or "")[:200],
                    decided_by=approval.decided_by,
                    created_at=stamp,
                )
                session.add(row)
            until, scope = row.until, row.scope_tenant
        return {"paused_until": datetime.fromtimestamp(until, UTC).isoformat(), "tenant_id": scope}

    return [
        ApprovalAction(
            PAUSE_ACTION,
            pause,
            "Hold back dunning reminders for some hours (every tenant, or the payload's tenant_id).",
            destructive=False,
        )
    ]
