"""The embedded engine on the real Temporal dev server: start-up, the lease, schedules, restarts, hot reload."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from typing import Any

import pytest

from botcriptofy import Activity, Actor, Schedule, ScheduledRun, Workflow, WorkflowContext, hookimpl
from botcriptofy.testing import wait_until
from botcriptofy_workflows import WorkflowsPlugin
from botcriptofy_workflows._state import ENGINE

from .conftest import Probe, settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ADMIN = {"x-probe-actor": "configuration:manage"}


class Identity:
    """Test identity: the caller holds the permissions named in ``x-probe-actor``."""

    @hookimpl
    def actor_from_request(self, kernel: Any, request: Any) -> Actor | None:
        held = request.headers.get("x-probe-actor")
        return Actor(id="user:ops", kind="user", permissions=frozenset(held.split(","))) if held else None


def ticking(probe: Probe, seconds: float = 1) -> Probe:
    async def tick(run: ScheduledRun) -> dict[str, Any]:
        probe.fired.append(run)
        return {"tick": run.scheduled_at.isoformat() if run.scheduled_at else None}

    probe.schedules = [Schedule("tick", tick, interval=seconds, description="counts ticks")]
    return probe


async def embedded(kernel_harness: Any, probe: Probe, extra: Mapping[str, Any] | None = None, **more: Any) -> Any:
    return await kernel_harness(
        plugins={"workflows": WorkflowsPlugin(), "probe": probe, "identity": Identity(), **more}, settings=settings(extra)
    )


def engine_of(harness: Any) -> Any:
    return harness.kernel.stash[ENGINE]


async def test_the_embedded_server_starts_is_ready_and_fires_a_schedule_once_per_tick(kernel_harness, probe):
    harness = await embedded(kernel_harness, ticking(probe))
    engine = engine_of(harness)
    assert engine.server.owner and (harness.state_dir / "temporal" / "temporal.db").exists()
    ready = (await harness.client.get("/-/ready")).json()
    assert ready["checks"]["workflows.temporal"]["status"] == "ok"
    await wait_until(lambda: len(probe.fired) >= 3, timeout=30)
    ticks = [run.scheduled_at for run in probe.fired]
    assert all(tick is not None for tick in ticks) and len(set(ticks)) == len(ticks)
    listed = (await harness.client.get("/v1/admin/schedules", headers=ADMIN)).json()
    [tick] = [item for item in listed if item["id"] == "probe.tick"]
    assert tick["plugin"] == "probe" and tick["interval_seconds"] == [1.0] and not tick["paused"] and tick["registered"]
    assert tick["time_zone"] == "America/Sao_Paulo"


async def test_a_second_process_on_the_same_state_follows_the_owner(kernel_harness, probe, tmp_path):
    first = await embedded(kernel_harness, Probe())
    second_settings = {**settings(), "kernel": {"state_dir": str(first.state_dir)}}
    second = await kernel_harness(plugins={"workflows": WorkflowsPlugin(), "probe": probe}, settings=second_settings)
    owner, follower = engine_of(first), engine_of(second)
    assert owner.server.owner and not follower.server.owner
    assert follower.server.address == owner.server.address
    assert (await second.client.get("/-/ready")).status_code == 200


async def test_the_dev_server_killed_is_restarted_and_schedules_resume(kernel_harness, probe):
    harness = await embedded(kernel_harness, ticking(probe))
    engine = engine_of(harness)
    await wait_until(lambda: len(probe.fired) >= 1, timeout=30)
    os.kill(engine.server.process.pid, signal.SIGKILL)
    await wait_until(lambda: engine.server.restarts == 1 and engine.server.ready.is_set(), timeout=30)
    seen = len(probe.fired)
    await wait_until(lambda: len(probe.fired) >= seen + 2, timeout=30)
    assert harness.runtime.metrics.get_sample_value("botcriptofy_workflow_server_restarts_total") == 1
    assert (await harness.client.get("/-/ready")).status_code == 200


async def test_the_dev_server_is_out_of_reach_of_the_services_process_group(kernel_harness, probe):
    """Ctrl-C in a terminal, or a supervisor's stop, signals the service's process group: not the dev server.

    It stopped at once, and its supervisor, still running while the service drained, restarted it ("exited
    with code 0; restarting it"). The service stops it in order at shutdown; it dies with its owner anyway.
    """
    harness = await embedded(kernel_harness, Probe())
    server = engine_of(harness).server.process.pid
    assert os.getpgid(server) != os.getpgid(0) and os.getsid(server) != os.getsid(0)


async def test_disabling_a_plugin_pauses_its_schedules_and_enabling_resumes_them(kernel_harness, probe):
    harness = await embedded(kernel_harness, ticking(probe, seconds=60))
    show = "/v1/admin/schedules/probe.tick"
    assert (await harness.client.get(show, headers=ADMIN)).json()["paused"] is False
    assert (await harness.apply({**settings(), "plugins": {"disabled": ["probe"]}})).applied
    await wait_until(lambda: _paused(harness, show), timeout=10)
    body = (await harness.client.get(show, headers=ADMIN)).json()
    assert body["note"] == "botcriptofy: plugin disabled: probe" and body["registered"] is False
    assert (await harness.apply(settings())).applied
    await wait_until(lambda: _active(harness, show), timeout=10)
    # An operator's pause is kept when the plugin is disabled and enabled again.
    paused = await harness.client.post(f"{show}/pause", headers=ADMIN)
    assert paused.status_code == 200 and paused.json()["paused"] and paused.json()["note"] == "paused by user:ops"
    assert (await harness.apply({**settings(), "plugins": {"disabled": ["probe"]}})).applied
    assert (await harness.apply(settings())).applied
    await wait_until(lambda: engine_of(harness).registry.generation == harness.kernel.generation, timeout=10)
    assert (await harness.client.get(show, headers=ADMIN)).json()["note"] == "paused by user:ops"
    resumed = await harness.client.post(f"{show}/resume", headers=ADMIN)
    assert resumed.json()["paused"] is False
    triggered = await harness.client.post(f"{show}/trigger", headers=ADMIN)
    assert triggered.status_code == 200
    await wait_until(lambda: len(probe.fired) == 1, timeout=10)


async def _paused(harness: Any, path: str) -> bool:
    return bool((await harness.client.get(path, headers=ADMIN)).json()["paused"])


async def _active(harness: Any, path: str) -> bool:
    return not await _paused(harness, path)


async def greeter(context: WorkflowContext, input: Mapping[str, Any]) -> str:
    named = await context.wait_for_signal("name", timeout=3600)
    return str(await context.activity("probe.greet", {"name": (named or {}).get("name", "nobody")}))


async def greet(input: Mapping[str, Any]) -> str:
    return f"hi, {input['name']}"


async def test_a_disabled_plugins_workflow_waits_and_resumes_when_it_is_enabled_again(kernel_harness, probe):
    probe.extra = [Workflow("probe.greeter", greeter), Activity("probe.greet", greet)]
    harness = await embedded(kernel_harness, probe)
    await harness.kernel.workflows().start("probe.greeter", id="greet-1")
    assert (await harness.apply({**settings(), "plugins": {"disabled": ["probe"]}})).applied
    await wait_until(lambda: "probe" not in engine_of(harness).workers, timeout=10)
    assert await harness.kernel.workflows().signal("greet-1", "name", {"name": "Bia"})
    run = await harness.kernel.workflows().describe("greet-1")
    assert run is not None and run.status == "running"
    assert (await harness.apply(settings())).applied
    assert await harness.kernel.workflows().wait("greet-1") == "hi, Bia"


async def test_operators_list_show_and_cancel_workflows(kernel_harness, probe):
    probe.extra = [Workflow("probe.greeter", greeter), Activity("probe.greet", greet)]
    harness = await embedded(kernel_harness, probe)
    await harness.kernel.workflows().start("probe.greeter", id="greet-2")
    assert (await harness.client.get("/v1/admin/workflows")).status_code == 401
    assert (await harness.client.get("/v1/admin/workflows", headers={"x-probe-actor": "finance:read"})).status_code == 403
    await wait_until(lambda: _listed(harness, "greet-2"), timeout=15)
    shown = (await harness.client.get("/v1/admin/workflows/greet-2", headers=ADMIN)).json()
    assert shown["workflow"] == "probe.greeter" and shown["status"] == "running" and shown["task_queue"] == "botcriptofy.probe"
    cancelled = await harness.client.post("/v1/admin/workflows/greet-2/cancel", headers=ADMIN)
    assert cancelled.json() == {"id": "greet-2", "cancel_requested": True}
    await wait_until(lambda: _status(harness, "greet-2", "canceled"), timeout=10)
    missing = await harness.client.get("/v1/admin/workflows/nope", headers=ADMIN)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    bad = await harness.client.get("/v1/admin/workflows?status=sleeping", headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"].endswith("status")
    assert (await harness.client.post("/v1/admin/schedules/nope/pause", headers=ADMIN)).status_code == 404


async def _listed(harness: Any, workflow_id: str) -> bool:
    found = (await harness.client.get("/v1/admin/workflows?status=running&workflow=probe.greeter", headers=ADMIN)).json()
    return any(item["id"] == workflow_id for item in found)


async def _status(harness: Any, workflow_id: str, status: str) -> bool:
    return bool((await harness.client.get(f"/v1/admin/workflows/{workflow_id}", headers=ADMIN)).json()["status"] == status)


async def test_external_mode_connects_to_a_shared_engine(kernel_harness, probe):
    from temporalio.testing import WorkflowEnvironment

    from .conftest import AGENT, TEMPORAL, staff

    env = await WorkflowEnvironment.start_local(dev_server_existing_path=TEMPORAL, ui=False)
    try:
        address = env.client.service_client.config.target_host
        harness = await kernel_harness(
            plugins={"workflows": WorkflowsPlugin(), "probe": probe}, settings=settings({"mode": "external", "address": address})
        )
        engine = engine_of(harness)
        assert engine.server is None  # nothing supervised: the cluster is someone else's
        approval = await harness.kernel.request_approval(
            action="probe.refund", summary="s", department="finance", permission="finance:approve", requester=AGENT, expires_in=60
        )
        await harness.kernel.decide_approval(approval.id, approve=True, actor=staff("finance:approve"))
        assert (await harness.kernel.workflows().wait(f"approval.{approval.id}"))["error"] is None
        assert len(probe.executed) == 1
        await harness.close()
    finally:
        await env.shutdown()


async def test_external_mode_without_an_address_is_refused_naming_the_key(kernel_harness):
    from botcriptofy import ConfigError

    with pytest.raises(ConfigError) as refused:
        await kernel_harness(plugins={"workflows": WorkflowsPlugin()}, settings=settings({"mode": "external"}))
    assert "workflows" in str(refused.value) and "address" in str(refused.value)


async def test_an_activity_in_flight_finishes_when_its_plugin_is_disabled(kernel_harness, probe):
    import asyncio

    started: list[float] = []
    finished: list[float] = []

    async def slow(input: Mapping[str, Any]) -> str:
        started.append(1)
        await asyncio.sleep(1.0)
        finished.append(1)
        return "done"

    async def one_step(context: WorkflowContext, input: Mapping[str, Any]) -> str:
        return str(await context.activity("probe.slow", {}))

    probe.extra = [Workflow("probe.one-step", one_step), Activity("probe.slow", slow)]
    harness = await embedded(kernel_harness, probe)
    await harness.kernel.workflows().start("probe.one-step", id="step-1")
    await wait_until(lambda: started, timeout=15)
    assert (await harness.apply({**settings(), "plugins": {"disabled": ["probe"]}})).applied
    await wait_until(lambda: finished, timeout=10)  # the stopping worker lets the running try finish
    assert (await harness.apply(settings())).applied  # the workflow's next step runs on the plugin's worker
    assert await harness.kernel.workflows().wait("step-1") == "done"
    assert started == [1]  # it was neither cancelled nor run again


async def test_a_schedule_handler_runs_as_its_plugins_service_principal(kernel_harness, probe):
    from botcriptofy import acting_actor

    seen: list[Actor | None] = []

    async def tick(run: ScheduledRun) -> None:
        seen.append(acting_actor())

    probe.schedules = [Schedule("whoami", tick, interval=1)]
    await embedded(kernel_harness, probe)
    await wait_until(lambda: seen, timeout=30)
    actor = seen[0]
    assert actor is not None and actor.id == "service:probe" and actor.kind == "service"
    assert acting_actor() is None  # the worker's actor does not leak out of the activity
