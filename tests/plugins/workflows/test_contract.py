"""The kernel contract on the time-skipping server: plugin workflows and activities, signals, versioning,
the scheduled report, config rollbacks through an approval, and what
happens without an engine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from botcriptofy import Activity, ProblemError, Schedule, Workflow, WorkflowContext
from botcriptofy_workflows import REPORT_WORKFLOW

from .conftest import AGENT, settings, staff

pytestmark = pytest.mark.timeout(60)


async def greeter(context: WorkflowContext, input: Mapping[str, Any]) -> dict[str, Any]:
    named = await context.wait_for_signal("name", timeout=3600)
    name = named["name"] if named else "nobody"
    if context.patched("formal-greeting"):
        text = await context.activity("probe.greet", {"name": name, "formal": True})
    else:
        text = await context.activity("probe.greet", {"name": name})
    return {"text": text, "at": context.now().isoformat(), "id": context.workflow_id}


async def greet(input: Mapping[str, Any]) -> str:
    return f"{'Good day' if input.get('formal') else 'hi'}, {input['name']}"


async def gather(input: Mapping[str, Any]) -> dict[str, Any]:
    return {"body": f"MRR for {input['month']}: R$ 1.234,00", "mrr_minor": 123400}


@pytest.fixture
def contributing(probe):
    probe.extra = [
        Workflow("probe.greeter", greeter),
        Activity("probe.greet", greet),
        Activity("probe.gather", gather),
    ]
    return probe


async def test_a_plugin_workflow_waits_for_a_signal_and_calls_its_activity(contributing, engine_harness, time_skipping):
    engines = engine_harness.kernel.workflows()
    run = await engines.start("probe.greeter", id="greet-1", input={})
    assert run.status == "running" and run.task_queue == "botcriptofy.probe" and run.workflow == "probe.greeter"
    again = await engines.start("probe.greeter", id="greet-1", input={})
    assert again.run_id == run.run_id  # starting the same id again finds the running one
    assert await engines.signal("greet-1", "name", {"name": "Ana"}) is True
    result = await engines.wait("greet-1")
    assert result["text"] == "Good day, Ana" and result["id"] == "greet-1"
    # A signal that never comes: the timeout (one hour, skipped) gives None.
    await engines.start("probe.greeter", id="greet-2")
    await time_skipping.sleep(3601)
    assert (await engines.wait("greet-2"))["text"] == "Good day, nobody"


async def broken(context: WorkflowContext, input: Mapping[str, Any]) -> None:
    raise ValueError(f"cannot reconcile {input['account']}")


@pytest.fixture
def breaking(probe):
    probe.extra = [Workflow("probe.broken", broken)]
    return probe


async def test_a_failing_workflow_fails_once_and_is_counted(breaking, engine_harness):
    engines = engine_harness.kernel.workflows()
    await engines.start("probe.broken", id="broken-1", input={"account": "acc_9"})
    with pytest.raises(RuntimeError, match="ValueError: cannot reconcile acc_9"):
        await engines.wait("broken-1")
    assert (await engines.describe("broken-1")).status == "failed"
    metrics = engine_harness.runtime.metrics
    assert metrics.get_sample_value("botcriptofy_workflow_failures_total", {"workflow": "probe.broken"}) == 1


async def test_an_unknown_workflow_is_refused_with_the_field(engine_harness):
    with pytest.raises(ProblemError) as refused:
        await engine_harness.kernel.workflows().start("probe.nothing", id="x")
    assert refused.value.status == 422 and refused.value.errors[0]["field"] == "workflow"


async def test_the_scheduled_report_gathers_and_notifies(contributing, engine_harness):
    engines = engine_harness.kernel.workflows()
    await engines.start(
        REPORT_WORKFLOW,
        id="report-finance-2026-11",
        input={"gather": "probe.gather", "params": {"month": "2026-11"}, "recipient": "department:finance", "subject": "MRR"},
    )
    result = await engines.wait("report-finance-2026-11")
    assert result["mrr_minor"] == 123400
    [sent] = contributing.notifications
    assert sent.recipient == "department:finance" and sent.subject == "MRR" and "R$ 1.234,00" in sent.body
    assert sent.data["report_id"] == "report-finance-2026-11"


async def test_a_config_rollback_requested_from_a_channel_runs_once_approved(engine_harness, probe):
    kernel = engine_harness.kernel
    first = kernel.config_version
    changed = await engine_harness.apply({"workflows": {**settings()["workflows"], "approval_max_attempts": 2}})
    assert changed.applied and changed.version == first + 1
    approval = await kernel.request_approval(
        action="config.rollback",
        summary=f"Roll the configuration back to version {first}",
        department="configuration",
        permission="configuration:manage",
        requester=AGENT,
        payload={"version": first},
    )
    assert approval.destructive  # the action says so; channels ask for a second confirmation
    with pytest.raises(ProblemError) as refused:
        await kernel.decide_approval(approval.id, approve=True, actor=staff("finance:approve"))
    assert refused.value.status == 403
    await kernel.decide_approval(approval.id, approve=True, actor=staff("configuration:manage", name="carla"))
    outcome = await engine_harness.kernel.workflows().wait(f"approval.{approval.id}")
    assert outcome["error"] is None and outcome["result"]["applied"] is True
    current = engine_harness.runtime.current
    assert current.settings_for("workflows").approval_max_attempts == 0
    assert current.config_version == outcome["result"]["version"]


async def test_a_rollback_to_a_missing_version_is_reported_not_retried(engine_harness, probe):
    kernel = engine_harness.kernel
    approval = await kernel.request_approval(
        action="config.rollback",
        summary="?",
        department="configuration",
        permission="configuration:manage",
        requester=AGENT,
        payload={"version": 999},
    )
    await kernel.decide_approval(approval.id, approve=True, actor=staff("configuration:*"))
    outcome = await kernel.workflows().wait(f"approval.{approval.id}")
    assert "no configuration version 999" in outcome["error"]
    assert probe.outcomes[-1]["error"] == outcome["error"]


async def test_without_an_engine_schedules_are_reported_not_running(kernel_harness, probe):
    async def tick(run):
        return None

    probe.schedules = [Schedule("tick", tick, interval=60), Schedule("nightly", tick, cron="0 3 * * *")]
    harness = await kernel_harness(plugins={"probe": probe})
    response = await harness.client.get("/-/ready")
    assert response.status_code == 503
    check = response.json()["checks"]["core.schedules"]
    assert check["status"] == "fail"
    assert "probe.nightly, probe.tick" in check["error"] and "no workflows plugin" in check["error"]


async def test_with_no_schedules_readiness_is_unaffected(kernel_harness, probe):
    harness = await kernel_harness(plugins={"probe": probe})
    response = await harness.client.get("/-/ready")
    assert response.status_code == 200 and "core.schedules" not in response.json()["checks"]


def test_schedules_validate_what_they_are_given():
    async def tick(run):
        return None

    with pytest.raises(ValueError, match="exactly one of cron or interval"):
        Schedule("both", tick, cron="* * * * *", interval=5)
    with pytest.raises(ValueError, match="exactly one of cron or interval"):
        Schedule("neither", tick)
    with pytest.raises(ValueError, match="overlap must be one of"):
        Schedule("x", tick, interval=5, overlap="sometimes")
