"""Approvals on Temporal: one durable workflow per request, decisions as updates, expiry as a timer.

Every step is written to the audit trail through ``kernel.audit(...)``: ``approval.requested`` (by
the requester), ``approval.approved`` / ``approval.rejected`` (by the deciding actor; a decider
without the permission as ``approval.decision_refused``), ``approval.expired``, and for an approved
request ``approval.action_executed`` or ``approval.action_failed``. The workflow writes each step through an
activity, in its own order: the decision is on record before the action runs, whatever the API process is doing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from botcriptofy import Actor, ApprovalAction, ApprovalRequest, Event, Kernel, ProblemError, acting_as

from ._codec import approval_from_data, approval_to_data
from ._temporal import APPROVAL_WORKFLOW, AUDIT_ACTIVITY, OUTCOME_ACTIVITY, PRESENT_ACTIVITY

if TYPE_CHECKING:
    from ._engine import Engine

PROBLEM = "https://botcriptofy.dev/problems/approval"
REFUSAL_WAIT = 5.0  # seconds a refused decision waits for its workflow to take it before this process records it


class ApprovalOutcome(Event):
    """An approval request ended: approved (with the action's result or error), rejected or expired."""

    event_type = "approvals.outcome"

    id: str
    action: str
    status: str
    department: str
    requester: str
    tenant_id: str | None = None
    decided_by: str | None = None
    reason: str | None = None
    result: Any = None
    error: str | None = None


def workflow_id(approval_id: str) -> str:
    return f"approval.{approval_id}"


async def audit_step(
    kernel: Kernel,
    approval: ApprovalRequest,
    action: str,
    *,
    actor_id: str = "service:workflows",
    actor_kind: str | None = "service",
    outcome: str = "success",
    strict: bool = False,
    **details: Any,
) -> None:
    """Record one step of ``approval`` in the audit trail (the payload stays out: it may hold personal data).

    ``strict``: a recorder's failure is raised, so that the workflow's activity is retried.
    """
    await kernel.audit(
        action,
        strict=strict,
        actor_id=actor_id,
        actor_kind=actor_kind,
        tenant_id=approval.tenant_id,
        target=f"approval:{approval.id}",
        outcome=outcome,
        details={
            "approval_id": approval.id,
            "action": approval.action,
            "department": approval.department,
            "permission": approval.permission,
            "requester": approval.requester,
            **details,
        },
    )


class TemporalApprovals:
    """The :class:`botcriptofy.Approvals` provider."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def request(
        self,
        *,
        action: str,
        summary: str,
        department: str,
        permission: str,
        requester: Actor,
        expires_in: float,
        payload: Mapping[str, Any] | None = None,
        tenant_id: str | None = None,
        destructive: bool = False,
    ) -> ApprovalRequest:
        known = self.engine.registry.actions.get(action) or await self._owner_now(action)
        if known is None:
            raise ProblemError(
                422,
                "Unknown approval action",
                f"No enabled plugin registers the approval action '{action}' (register_approval_actions).",
                type=PROBLEM,
                errors=[{"field": "action", "message": "no enabled plugin registers it"}],
            )
        if not expires_in > 0:
            raise ProblemError(
                422,
                "Invalid expiry",
                "expires_in must be a positive number of seconds.",
                type=PROBLEM,
                errors=[{"field": "expires_in", "message": "must be > 0"}],
            )
        if ":" not in permission:
            raise ProblemError(
                422,
                "Invalid permission",
                f"permission must be 'department:action', not {permission!r}.",
                type=PROBLEM,
                errors=[{"field": "permission", "message": "must be department:action"}],
            )
        now = datetime.now(UTC)
        approval = ApprovalRequest(
            id=uuid.uuid4().hex,
            action=action,
            summary=summary,
            department=department,
            permission=permission,
            requester=requester.id,
            expires_at=now + timedelta(seconds=expires_in),
            created_at=now,
            payload=dict(payload or {}),
            tenant_id=tenant_id,
            destructive=destructive or known[1].destructive,
        )
        settings = self.engine.settings
        await self.engine.client.start_workflow(
            APPROVAL_WORKFLOW,
            {
                "approval": approval_to_data(approval),
                "requester_kind": requester.kind,
                "action_queue": self.engine.queue(known[0]),
                "retry": {**self.engine.retry, "attempts": settings.approval_max_attempts},
            },
            id=workflow_id(approval.id),
            task_queue=self.engine.queue("workflows"),
        )
        return approval

    async def _owner_now(self, action: str) -> tuple[str, ApprovalAction] | None:
        """Look in the serving generation: a plugin enabled a moment ago may not be in the registry yet."""
        kernel = self.engine.kernel.current()
        for plugin, actions in (await kernel.broadcast("register_approval_actions", kernel=kernel)).items():
            for item in actions or ():
                if isinstance(item, ApprovalAction) and item.name == action:
                    return plugin, item
        return None

    async def get(self, approval_id: str) -> ApprovalRequest | None:
        handle = self.engine.client.get_workflow_handle(workflow_id(approval_id))
        try:
            return approval_from_data(await handle.query("current"))
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND or error.status == RPCStatusCode.INVALID_ARGUMENT:
                return None
            raise

    async def decide(self, approval_id: str, *, approve: bool, actor: Actor, reason: str | None = None) -> ApprovalRequest:
        current = await self.get(approval_id)
        if current is None:
            raise ProblemError(404, "Unknown approval", f"There is no approval request '{approval_id}'.", type=PROBLEM)
        if not actor.can(current.permission):
            if not await self._refusal_recorded_by_workflow(approval_id, actor):
                await audit_step(
                    self.engine.kernel.current(),
                    current,
                    "approval.decision_refused",
                    actor_id=actor.id,
                    actor_kind=actor.kind,
                    outcome="denied",
                )
            raise ProblemError(
                403,
                "Forbidden",
                f"Deciding this request needs the permission '{current.permission}', which {actor.id} does not hold.",
                type=PROBLEM,
            )
        if current.status != "pending":
            raise self._conflict(current)
        handle = self.engine.client.get_workflow_handle(workflow_id(approval_id))
        try:
            decision = {"approve": approve, "actor": actor.id, "actor_kind": actor.kind, "reason": reason}
            decided = await handle.execute_update("decide", decision)
        except (WorkflowUpdateFailedError, RPCError):
            latest = await self.get(approval_id)
            if latest is not None and latest.status != "pending":
                raise self._conflict(latest) from None
            raise
        result = approval_from_data(decided)
        if not decided.get("audited_by_workflow"):  # a workflow started before the trail moved into the workflow
            await audit_step(
                self.engine.kernel.current(), result, f"approval.{result.status}", actor_id=actor.id, actor_kind=actor.kind, reason=reason
            )
        return result

    async def _refusal_recorded_by_workflow(self, approval_id: str, actor: Actor) -> bool:
        """Hand a refused decision to the workflow, which records it after the request (its trail, its order).

        True once the workflow has accepted it; False when this process must record it itself: the
        workflow is over, was started by 0.1.1 (which left the trail to this process), or did not accept
        it within ``REFUSAL_WAIT`` seconds (its worker is down; the entry may then come twice, but is never missing).
        """
        handle = self.engine.client.get_workflow_handle(workflow_id(approval_id))
        try:
            async with asyncio.timeout(REFUSAL_WAIT):
                await handle.start_update(
                    "refuse", {"actor": actor.id, "actor_kind": actor.kind}, wait_for_stage=WorkflowUpdateStage.ACCEPTED
                )
        except (TimeoutError, WorkflowUpdateFailedError, RPCError):
            return False
        return True

    @staticmethod
    def _conflict(approval: ApprovalRequest) -> ProblemError:
        by = f" by {approval.decided_by}" if approval.decided_by else ""
        return ProblemError(
            409,
            "Already decided",
            f"The approval request '{approval.id}' is already {approval.status}{by}.",
            type=PROBLEM,
            status_of_request=approval.status,
        )


def approval_activities(engine: Engine) -> list[Any]:
    """Activities of the approval workflow: record a step in the trail, present the request, report its outcome."""

    @activity.defn(name=AUDIT_ACTIVITY)
    async def audit(entry: dict[str, Any]) -> None:
        approval = approval_from_data(entry["approval"])
        details = {key: value for key, value in entry["details"].items() if value is not None}
        await audit_step(
            engine.kernel.current(),
            approval,
            entry["step"],
            actor_id=entry["actor_id"],
            actor_kind=entry["actor_kind"],
            strict=True,  # a trail that did not take the step fails the activity: it is retried, the action waits
            **details,
        )

    @activity.defn(name=PRESENT_ACTIVITY)
    async def present(data: dict[str, Any]) -> None:
        kernel = engine.kernel.current()
        with acting_as(await kernel.service_actor("workflows")):
            await kernel.broadcast("present_approval", kernel=kernel, approval=approval_from_data(data))

    @activity.defn(name=OUTCOME_ACTIVITY)
    async def outcome(data: dict[str, Any]) -> None:
        kernel = engine.kernel.current()
        approval = approval_from_data(data["approval"])
        event = ApprovalOutcome(
            id=approval.id,
            action=approval.action,
            status=approval.status,
            department=approval.department,
            requester=approval.requester,
            tenant_id=approval.tenant_id,
            decided_by=approval.decided_by,
            reason=approval.reason,
            result=data.get("result"),
            error=data.get("error"),
        )
        with acting_as(await kernel.service_actor("workflows")):
            try:
                await kernel.events.publish(event, idempotency_key=f"approval-outcome:{approval.id}", tenant_id=approval.tenant_id)
            except Exception as error:
                raise ApplicationError(f"publishing the outcome failed: {error!r}") from error
            if approval.status == "expired":
                await audit_step(kernel, approval, "approval.expired", outcome="failure")
            elif approval.status == "approved" and data.get("error") is None:
                await audit_step(kernel, approval, "approval.action_executed", decided_by=approval.decided_by)
            elif approval.status == "approved":
                await audit_step(
                    kernel, approval, "approval.action_failed", outcome="failure", decided_by=approval.decided_by, error=data["error"]
                )
            await kernel.broadcast("present_approval", kernel=kernel, approval=approval)

    return [audit, present, outcome]
