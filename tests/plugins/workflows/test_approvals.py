"""Approvals on the time-skipping test server: expiry, decisions, races, permissions, retries."""

from __future__ import annotations

import asyncio
import time

import pytest

from botcriptofy import ProblemError
from botcriptofy.testing import wait_until

from .conftest import AGENT, staff

pytestmark = pytest.mark.timeout(60)

DAY = 24 * 3600


async def ask(kernel, **changes):
    values = {
        "action": "probe.refund",
        "summary": "Refund invoice in_1 (R$ 29,00)",
        "department": "finance",
        "permission": "finance:approve",
        "requester": AGENT,
        "expires_in": DAY,
        "payload": {"invoice": "in_1", "amount": 2900},
        "tenant_id": "t1",
    }
    values.update(changes)
    return await kernel.request_approval(**values)


async def finished(harness, approval_id):
    return await harness.kernel.workflows().wait(f"approval.{approval_id}")


async def test_an_approval_expires_after_24_hours_in_well_under_a_second(engine_harness, probe, time_skipping):
    kernel = engine_harness.kernel
    approval = await ask(kernel)
    assert approval.status == "pending" and approval.requester == "agent:finance"
    started = time.monotonic()
    await wait_until(lambda: probe.presented)
    still = await kernel.approvals().get(approval.id)
    assert still is not None and still.status == "pending"
    await time_skipping.sleep(DAY + 1)
    outcome = await finished(engine_harness, approval.id)
    elapsed = time.monotonic() - started
    assert outcome["approval"]["status"] == "expired"
    assert elapsed < 5, elapsed  # a 24 h timer, skipped
    assert probe.executed == []
    assert [o["status"] for o in probe.outcomes] == ["expired"]
    # Presented on creation and again with the outcome.
    assert [p.status for p in probe.presented] == ["pending", "expired"]
    stored = await kernel.approvals().get(approval.id)
    assert stored is not None and stored.status == "expired"
    with pytest.raises(ProblemError) as late:
        await kernel.decide_approval(approval.id, approve=True, actor=staff("finance:approve"))
    assert late.value.status == 409


async def test_approve_runs_the_action_once_and_publishes_the_outcome(engine_harness, probe):
    kernel = engine_harness.kernel
    approval = await ask(kernel)
    await wait_until(lambda: probe.presented)
    decided = await kernel.decide_approval(approval.id, approve=True, actor=staff("finance:approve"), reason="customer called")
    assert decided.status == "approved" and decided.decided_by == "user:ana" and decided.reason == "customer called"
    outcome = await finished(engine_harness, approval.id)
    assert outcome["result"] == {"refunded": 2900, "by": "user:ana"}
    assert len(probe.executed) == 1 and probe.executed[0].id == approval.id
    assert probe.outcomes == [
        {
            "id": approval.id,
            "action": "probe.refund",
            "status": "approved",
            "department": "finance",
            "requester": "agent:finance",
            "tenant_id": "t1",
            "decided_by": "user:ana",
            "reason": "customer called",
            "result": {"refunded": 2900, "by": "user:ana"},
            "error": None,
        }
    ]
    assert [p.status for p in probe.presented] == ["pending", "approved"]


async def test_reject_runs_nothing(engine_harness, probe):
    kernel = engine_harness.kernel
    approval = await ask(kernel)
    decided = await kernel.decide_approval(approval.id, approve=False, actor=staff("finance:*"), reason="duplicate")
    assert decided.status == "rejected"
    outcome = await finished(engine_harness, approval.id)
    assert outcome["approval"]["status"] == "rejected" and outcome["result"] is None
    assert probe.attempts == 0 and probe.executed == []
    assert [o["status"] for o in probe.outcomes] == ["rejected"]


async def test_two_deciders_racing_one_wins(engine_harness, probe):
    kernel = engine_harness.kernel
    approval = await ask(kernel)
    results = await asyncio.gather(
        kernel.decide_approval(approval.id, approve=True, actor=staff("finance:approve", name="ana")),
        kernel.decide_approval(approval.id, approve=False, actor=staff("finance:approve", name="bruno")),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1, results
    assert isinstance(lost[0], ProblemError) and lost[0].status == 409
    assert won[0].decided_by in lost[0].detail
    outcome = await finished(engine_harness, approval.id)
    assert outcome["approval"]["status"] == won[0].status
    assert len(probe.executed) == (1 if won[0].status == "approved" else 0)


async def test_a_decider_without_the_permission_is_refused(engine_harness, probe):
    kernel = engine_harness.kernel
    approval = await ask(kernel)
    with pytest.raises(ProblemError) as refused:
        await kernel.decide_approval(approval.id, approve=True, actor=staff("support:approve", "finance:read"))
    assert refused.value.status == 403 and "finance:approve" in refused.value.detail
    still = await kernel.approvals().get(approval.id)
    assert still is not None and still.status == "pending"
    decided = await kernel.decide_approval(approval.id, approve=True, actor=staff("finance:approve"))
    assert decided.status == "approved"


async def test_the_approved_action_runs_once_when_its_activity_fails_twice(engine_harness, probe):
    probe.fail_times = 2
    kernel = engine_harness.kernel
    approval = await ask(kernel)
    await kernel.decide_approval(approval.id, approve=True, actor=staff("finance:approve"))
    outcome = await finished(engine_harness, approval.id)
    assert probe.attempts == 3
    assert len(probe.executed) == 1
    assert outcome["result"] == {"refunded": 2900, "by": "user:ana"} and outcome["error"] is None
    failures = engine_harness.runtime.metrics.get_sample_value(
        "botcriptofy_workflow_activity_failures_total", {"activity": "approval-action:probe.refund"}
    )
    assert failures == 2


async def test_a_client_error_from_the_action_is_not_retried_and_is_reported(engine_harness, probe):
    kernel = engine_harness.kernel
    approval = await ask(kernel, action="probe.refuse")
    await kernel.decide_approval(approval.id, approve=True, actor=staff("finance:approve"))
    outcome = await finished(engine_harness, approval.id)
    assert probe.attempts == 1
    assert "not refundable" in outcome["error"]
    assert probe.outcomes[-1]["status"] == "approved" and "not refundable" in probe.outcomes[-1]["error"]


async def test_bad_requests_are_refused_with_the_field(engine_harness):
    kernel = engine_harness.kernel
    with pytest.raises(ProblemError) as unknown:
        await ask(kernel, action="probe.nothing")
    assert unknown.value.status == 422 and unknown.value.errors[0]["field"] == "action"
    with pytest.raises(ProblemError) as expiry:
        await ask(kernel, expires_in=0)
    assert expiry.value.errors[0]["field"] == "expires_in"
    with pytest.raises(ProblemError) as missing:
        await kernel.decide_approval("nope", approve=True, actor=staff("finance:approve"))
    assert missing.value.status == 404


async def test_without_the_workflows_plugin_approvals_and_workflows_are_refused(kernel_harness, probe):
    harness = await kernel_harness(plugins={"probe": probe})
    with pytest.raises(ProblemError) as refused:
        await ask(harness.kernel)
    assert refused.value.status == 503 and "workflows plugin" in refused.value.detail
    with pytest.raises(ProblemError) as engine:
        harness.kernel.workflows()
    assert engine.value.status == 503 and "workflows plugin" in engine.value.detail
