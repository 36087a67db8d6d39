"""Approvals in the audit trail, and background work running as its plugin's service principal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

import botcriptofy_audit
import botcriptofy_storage
from botcriptofy import AuditRecord, Kernel, ProblemError, hookimpl
from botcriptofy_audit._models import entries
from botcriptofy_workflows import WorkflowsPlugin
from botcriptofy_workflows._plugin import ENGINE
from botcriptofy_workflows._temporal import AUDIT_ACTIVITY, ApprovalWorkflow

from .conftest import AGENT, settings, staff

pytestmark = pytest.mark.timeout(60)

DAY = 24 * 3600


@pytest.fixture
async def audited(kernel_harness: Any, time_skipping: Any, probe: Any, database_url: str) -> AsyncIterator[Any]:
    """The workflows plugin on the time-skipping server with storage and the audit plugin on ``database_url``."""
    harness = await kernel_harness(
        plugins={
            "storage": botcriptofy_storage,
            "audit": botcriptofy_audit,
            "workflows": WorkflowsPlugin(client=time_skipping.client),
            "probe": probe,
        },
        settings={"storage": {"url": database_url, "relay_poll_interval": 0.05}, "audit": {}, **settings()},
    )
    yield harness
    await harness.close()


async def ask(kernel: Any, **changes: Any) -> Any:
    values: dict[str, Any] = {
        "action": "probe.refund",
        "summary": "Refund invoice in_1",
        "department": "finance",
        "permission": "finance:approve",
        "requester": AGENT,
        "expires_in": DAY,
        "payload": {"invoice": "in_1", "amount": 2900},
        "tenant_id": "t1",
    }
    values.update(changes)
    return await kernel.request_approval(**values)


async def trail(kernel: Any, approval_id: str) -> list[dict[str, Any]]:
    async with kernel.database().session(system=True) as session:
        rows = (
            await session.execute(sa.select(entries).where(entries.c.target == f"approval:{approval_id}").order_by(entries.c.id))
        ).mappings()
        found = [dict(row) for row in rows]
    for row in found:
        row["details"] = json.loads(row["details"])
    return found


async def test_an_approved_request_is_audited_from_request_to_executed_action(audited, probe):
    kernel = audited.kernel
    approval = await ask(kernel)
    with pytest.raises(ProblemError) as refused:
        await kernel.decide_approval(approval.id, approve=True, actor=staff("finance:read", name="bia"))
    assert refused.value.status == 403
    await kernel.decide_approval(approval.id, approve=True, actor=staff("finance:approve"), reason="checked")
    outcome = await kernel.workflows().wait(f"approval.{approval.id}")
    assert outcome["error"] is None
    steps = await trail(kernel, approval.id)
    assert [(s["action"], s["actor_id"], s["outcome"]) for s in steps] == [
        ("approval.requested", "agent:finance", "success"),
        ("approval.decision_refused", "user:bia", "denied"),
        ("approval.approved", "user:ana", "success"),
        ("approval.action_executed", "service:workflows", "success"),
    ]
    assert all(s["tenant_id"] == "t1" and s["details"]["action"] == "probe.refund" for s in steps)
    assert steps[2]["details"]["reason"] == "checked" and steps[3]["details"]["decided_by"] == "user:ana"
    assert "amount" not in json.dumps([s["details"] for s in steps])  # the payload stays out of the trail
    # The approved action ran as its plugin's service principal.
    assert [actor.id if actor else None for actor in probe.actors] == ["service:probe"]


async def test_rejected_expired_and_failed_approvals_are_audited(audited, time_skipping):
    kernel = audited.kernel
    rejected = await ask(kernel)
    await kernel.decide_approval(rejected.id, approve=False, actor=staff("finance:approve"), reason="not owed")
    await kernel.workflows().wait(f"approval.{rejected.id}")
    assert [(s["action"], s["actor_id"]) for s in await trail(kernel, rejected.id)] == [
        ("approval.requested", "agent:finance"),
        ("approval.rejected", "user:ana"),
    ]

    expiring = await ask(kernel, expires_in=3600)
    await time_skipping.sleep(3601)
    assert (await kernel.workflows().wait(f"approval.{expiring.id}"))["approval"]["status"] == "expired"
    assert [(s["action"], s["outcome"]) for s in await trail(kernel, expiring.id)] == [
        ("approval.requested", "success"),
        ("approval.expired", "failure"),
    ]

    failing = await ask(kernel, action="probe.refuse")
    await kernel.decide_approval(failing.id, approve=True, actor=staff("finance:approve"))
    outcome = await kernel.workflows().wait(f"approval.{failing.id}")
    assert outcome["error"]
    steps = await trail(kernel, failing.id)
    assert [(s["action"], s["outcome"]) for s in steps] == [
        ("approval.requested", "success"),
        ("approval.approved", "success"),
        ("approval.action_failed", "failure"),
    ]
    assert "not refundable" in steps[-1]["details"]["error"]


@pytest.fixture
def slow_api_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API process takes half a second to write its audit entries (a busy worker, a slow database)."""
    record = Kernel.audit

    async def slow(self: Kernel, action: str, **values: Any) -> None:
        if action in {"approval.requested", "approval.approved", "approval.rejected"}:
            await asyncio.sleep(0.5)
        await record(self, action, **values)

    monkeypatch.setattr(Kernel, "audit", slow)


async def test_a_request_is_on_record_before_it_expires(audited: Any, slow_api_side: None) -> None:
    kernel = audited.kernel
    expiring = await ask(kernel, expires_in=0.05)
    await kernel.workflows().wait(f"approval.{expiring.id}")
    assert [s["action"] for s in await trail(kernel, expiring.id)] == ["approval.requested", "approval.expired"]


async def test_a_decision_is_on_record_before_the_action_runs(audited: Any, slow_api_side: None) -> None:
    kernel = audited.kernel
    failing = await ask(kernel, action="probe.refuse")
    await kernel.decide_approval(failing.id, approve=True, actor=staff("finance:approve"), reason="ok")
    await kernel.workflows().wait(f"approval.{failing.id}")
    steps = await trail(kernel, failing.id)
    assert [(s["action"], s["actor_id"], s["actor_kind"]) for s in steps] == [
        ("approval.requested", "agent:finance", "service"),
        ("approval.approved", "user:ana", "user"),
        ("approval.action_failed", "service:workflows", "service"),
    ]
    assert steps[1]["details"]["reason"] == "ok"


@pytest.fixture
def slow_request_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trail takes half a second to record a request (a busy database): the workflow's first audit lags."""
    record = Kernel.audit

    async def slow(self: Kernel, action: str, **values: Any) -> None:
        if action == "approval.requested":
            await asyncio.sleep(0.5)
        await record(self, action, **values)

    monkeypatch.setattr(Kernel, "audit", slow)


async def test_a_refused_decision_is_on_record_after_the_request_it_refuses(audited: Any, slow_request_record: None) -> None:
    kernel = audited.kernel
    approval = await ask(kernel)
    with pytest.raises(ProblemError) as refused:
        await kernel.decide_approval(approval.id, approve=True, actor=staff("finance:read", name="bia"))
    assert refused.value.status == 403
    await kernel.decide_approval(approval.id, approve=True, actor=staff("finance:approve"))
    await kernel.workflows().wait(f"approval.{approval.id}")
    assert [(s["action"], s["actor_id"], s["outcome"]) for s in await trail(kernel, approval.id)] == [
        ("approval.requested", "agent:finance", "success"),
        ("approval.decision_refused", "user:bia", "denied"),
        ("approval.approved", "user:ana", "success"),
        ("approval.action_executed", "service:workflows", "success"),
    ]


async def test_a_decision_refused_after_the_workflow_ended_is_recorded_once(audited: Any) -> None:
    kernel = audited.kernel
    approval = await ask(kernel)
    await kernel.decide_approval(approval.id, approve=False, actor=staff("finance:approve"))
    await kernel.workflows().wait(f"approval.{approval.id}")
    with pytest.raises(ProblemError) as refused:
        await kernel.decide_approval(approval.id, approve=True, actor=staff("finance:read", name="bia"))
    assert refused.value.status == 403
    assert [s["action"] for s in await trail(kernel, approval.id)] == [
        "approval.requested",
        "approval.rejected",
        "approval.decision_refused",
    ]


@pytest.mark.parametrize("decision", ["approved", "rejected"])
async def test_approvals_in_flight_across_the_upgrade_replay_unchanged(decision: str) -> None:
    """Histories written by 0.1.1 (which audited from the API process) still replay: the change is patched."""
    path = Path(__file__).parent / "histories" / f"approval-{decision}-0.1.1.json"
    history = WorkflowHistory.from_json(f"approval-{decision}", path.read_text())
    await Replayer(workflows=[ApprovalWorkflow]).replay_workflow(history)


async def test_a_history_written_by_this_version_replays(audited: Any) -> None:
    kernel = audited.kernel
    approval = await ask(kernel)
    await kernel.decide_approval(approval.id, approve=True, actor=staff("finance:approve"))
    await kernel.workflows().wait(f"approval.{approval.id}")
    history = await kernel.stash[ENGINE].client.get_workflow_handle(f"approval.{approval.id}").fetch_history()
    assert sum(1 for event in history.events if event.activity_task_scheduled_event_attributes.activity_type.name == AUDIT_ACTIVITY) == 2
    await Replayer(workflows=[ApprovalWorkflow]).replay_workflow(history)


class FailingTrail:
    """An audit recorder that refuses the decision twice (its database unreachable), and what it kept."""

    def __init__(self, probe: Any) -> None:
        self.probe = probe
        self.kept: list[tuple[str, int]] = []  # (action, the probe's action attempts when it was recorded)
        self.refused = 0

    @hookimpl
    async def record_audit(self, kernel: Any, record: AuditRecord) -> None:
        if record.action == "approval.approved" and self.refused < 2:
            self.refused += 1
            raise ConnectionError("audit database unreachable")
        self.kept.append((record.action, self.probe.attempts))


async def test_the_action_waits_until_the_trail_takes_the_decision(kernel_harness: Any, time_skipping: Any, probe: Any) -> None:
    trail = FailingTrail(probe)
    harness = await kernel_harness(
        plugins={"workflows": WorkflowsPlugin(client=time_skipping.client), "probe": probe, "trail": trail}, settings=settings()
    )
    try:
        kernel = harness.kernel
        approval = await ask(kernel)
        await kernel.decide_approval(approval.id, approve=True, actor=staff("finance:approve"))
        outcome = await kernel.workflows().wait(f"approval.{approval.id}")
        assert outcome["error"] is None and probe.attempts == 1
        assert trail.refused == 2
        # Recorded once the trail took it, before the action's first attempt.
        assert trail.kept == [("approval.requested", 0), ("approval.approved", 0), ("approval.action_executed", 1)]
    finally:
        await harness.close()
