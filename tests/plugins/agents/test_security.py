"""The security agent: its rules at every boundary, windows, fallbacks, approvals, shadow mode, live disable, least privilege."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from botcriptofy import Actor, ProblemError
from botcriptofy.testing import wait_until
from botcriptofy_agent_security import AGENT, CASES, SecuritySettings, rules
from botcriptofy_agents import Trigger, _store, handle, load_cases, read_decisions, registered_agents, runner_of
from botcriptofy_auth._events import LoginFailed

from .conftest import MODEL_NAME, decision_json

pytestmark = pytest.mark.timeout(60)

TEST_SERVER = str(Path(sys.executable).parent / "temporal-test-server")
FAST_WORKFLOWS = {"retry_initial_interval": 0.01, "retry_maximum_interval": 0.05, "watch_interval": 0.05, "graceful_shutdown": 2}
SHIPPED = load_cases(CASES)
DECIDER = Actor(
    id="user:sec-manager", kind="user", tenant_id="company", permissions=frozenset({"users:block", "sessions:revoke", "security:read"})
)


def test_at_least_thirty_cases_ship_with_the_agent():
    assert len(SHIPPED) >= 30
    assert {c.trigger.kind for c in SHIPPED} == {
        "failed_logins",
        "account_locked",
        "rate_limited",
        "new_location",
        "token_reuse",
        "activity",
    }


@pytest.mark.parametrize("case", SHIPPED, ids=lambda c: f"line{c.line}-{c.trigger.kind}-{c.expected_action}")
def test_the_rules_decide_every_shipped_case(case):
    decision = rules(case.trigger, case.context, SecuritySettings())
    assert decision.action == case.expected_action
    AGENT.decision.model_validate(decision.model_dump())


def test_thresholds_follow_the_settings():
    strict = SecuritySettings(failed_login_threshold=3, lock_threshold=4, activity_threshold=10)
    account = {"scope": "account", "window_s": 900}
    assert rules(Trigger("failed_logins", "u", {**account, "failures": 2}), {}, strict).action == "none"
    assert rules(Trigger("failed_logins", "u", {**account, "failures": 3}), {}, strict).action == "notify"
    assert rules(Trigger("failed_logins", "u", {**account, "failures": 4}), {}, strict).action == "lock_account"
    assert rules(Trigger("activity", "u", {"actions": 11}), {}, strict).action == "open_incident"


async def _failed_login(kernel: Any, user_id: str | None, ip: str, email: str = "ana@example.com") -> None:
    event = LoginFailed(email=email, user_id=user_id, tenant_id="t-1" if user_id else None, reason="bad_password", failures=1, ip=ip)
    await kernel.events.publish(event, tenant_id="t-1" if user_id else None)


async def _decisions(kernel: Any, **filters: Any) -> list[dict[str, Any]]:
    security = await kernel.service_actor("agent_security")
    return list(reversed(await read_decisions(kernel, security, department="security", **filters)))


async def test_failed_logins_cost_one_decision_per_window_and_level(make_agents, recorder):
    harness = await make_agents(security={"approval_actions": []})
    kernel = harness.kernel
    for _ in range(4):
        await _failed_login(kernel, "u-7", "10.0.0.1")
    await asyncio.sleep(0.3)
    runner = runner_of(kernel, AGENT)
    await runner.idle()
    assert await _decisions(kernel, subject="u-7") == []
    for _ in range(12):  # 5th..16th: one alert at 5, one lock proposal at 15
        await _failed_login(kernel, "u-7", "10.0.0.1")
    await wait_until(lambda: runner.decided >= 3, timeout=10)  # + the address alert at 5
    await runner.idle()
    rows = await _decisions(kernel, subject="u-7")
    assert [(r["trigger"]["data"]["failures"], r["action"]) for r in rows] == [(5, "notify"), (15, "lock_account")]
    assert rows[0]["outcome"] == "executed" and rows[1]["outcome"] == "failed"  # no approval route and no direct lock
    assert recorder.notifications and all("ana@example.com" not in json.dumps(n.to_dict()) for n in recorder.notifications)
    assert {n.severity for n in recorder.notifications} == {"warning"}  # decision severity "warning"
    by_address = [r for r in await _decisions(kernel) if r["trigger"]["data"].get("scope") == "address"]
    assert [(r["subject"].startswith("addr:"), r["action"]) for r in by_address] == [(True, "notify")]
    assert "10.0.0.1" not in json.dumps([r["trigger"] for r in await _decisions(kernel)])


async def test_one_address_failing_on_three_accounts_opens_an_incident(make_agents):
    harness = await make_agents()
    kernel = harness.kernel
    for email in ("a@example.com", "b@example.com", "c@example.com"):
        await _failed_login(kernel, None, "10.9.9.9", email=email)
    runner = runner_of(kernel, AGENT)
    await wait_until(lambda: runner.decided >= 1, timeout=10)
    await runner.idle()
    (row,) = await _decisions(kernel)
    assert (row["trigger"]["data"]["accounts"], row["action"], row["outcome"]) == (3, "open_incident", "executed")


@pytest.mark.parametrize(
    ("reply", "delay", "reason"),
    [
        ("lock them all", 0.0, "invalid_json"),
        ('{"action": "lock_account"}', 0.0, "schema_invalid"),
        (decision_json("revoke_sessions"), 0.0, "outside_policy"),
        (decision_json("notify"), 2.0, "timeout"),
    ],
)
async def test_a_failing_model_leaves_the_decision_to_the_rules_with_the_reason(make_agents, broken_ollama, recorder, reply, delay, reason):
    server = broken_ollama(reply, delay=delay)
    timeout = 0.3 if reason == "timeout" else 10
    settings = {
        "provider": "ollama",
        "model": MODEL_NAME,
        "host": server.url,
        "timeout": timeout,
        "allowed_actions": ["notify", "open_incident"],
    }
    harness = await make_agents(security=settings)
    row = await handle(
        harness.kernel, AGENT, Trigger("failed_logins", "u-2", {"scope": "account", "failures": 5}, tenant_id="t-1", user_id="u-2")
    )
    assert (row["source"], row["fallback_reason"], row["action"], row["outcome"]) == ("rules", reason, "notify", "executed")
    assert len(recorder.notifications) == 1


async def test_the_local_model_decides_a_case(make_agents, local_ollama):
    harness = await make_agents(
        security={"provider": "ollama", "model": MODEL_NAME, "host": local_ollama.url, "timeout": 60, "shadow": True}
    )
    row = await handle(harness.kernel, AGENT, Trigger("token_reuse", "u-3", {}, tenant_id="t-1", user_id="u-3"))
    AGENT.decision.model_validate(json.loads(row["raw_output"]))
    assert row["source"] == "model" or row["fallback_reason"] == "outside_policy"
    assert row["outcome"] in ("shadow", "no_action")


async def test_shadow_mode_decides_and_records_but_never_acts(make_agents, recorder):
    harness = await make_agents(security={"shadow": True})
    kernel = harness.kernel
    notify = await handle(kernel, AGENT, Trigger("rate_limited", "client:1", {"status": 429}))
    lock = await handle(kernel, AGENT, Trigger("token_reuse", "u-4", {}, tenant_id="t-1", user_id="u-4"))
    assert [(r["action"], r["outcome"], r["approval_id"]) for r in (notify, lock)] == [
        ("notify", "shadow", None),
        ("revoke_sessions", "shadow", None),
    ]
    assert recorder.notifications == [] and [a for a in recorder.audits if a.action.startswith("agents.")] == []


async def test_the_hourly_cap_stops_acting(make_agents, recorder):
    harness = await make_agents(security={"max_actions_per_hour": 2})
    kernel = harness.kernel
    outcomes = [(await handle(kernel, AGENT, Trigger("rate_limited", f"client:{n}", {"status": 429})))["outcome"] for n in range(3)]
    assert outcomes == ["executed", "executed", "capped"] and len(recorder.notifications) == 2


async def test_every_action_is_audited_under_the_department_principal(make_agents, recorder):
    harness = await make_agents()
    kernel = harness.kernel
    row = await handle(kernel, AGENT, Trigger("account_locked", "u-5", {"failures": 15}, tenant_id="t-1", user_id="u-5"))
    principal = await kernel.service_actor("agent_security")
    assert principal.kind == "service" and principal.can("security:act") and not principal.can("configuration:read")
    (entry,) = [a for a in recorder.audits if a.action == "agents.open_incident"]
    assert (entry.actor_id, entry.target, entry.outcome) == (principal.id, f"agent_decision:{row['id']}", "success")


async def test_its_principal_cannot_read_other_departments(make_agents):
    harness = await make_agents()
    kernel = harness.kernel
    principal = await kernel.service_actor("agent_security")
    for department in ("configuration", "finance", "subscriptions"):
        with pytest.raises(ProblemError) as refused:
            await read_decisions(kernel, principal, department=department)
        assert refused.value.status == 403
    assert not principal.can("users:read") or principal.can("security:read")


async def test_incidents_command_lists_incidents_for_security_staff_only(make_agents):
    harness = await make_agents()
    kernel = harness.kernel
    await handle(kernel, AGENT, Trigger("account_locked", "u-6", {"failures": 15}, tenant_id="t-1", user_id="u-6"))
    reply = await kernel.run_staff_command("incidents", actor=DECIDER, arguments={"limit": 5}, channel="test", locale="en")
    assert [i["action"] for i in reply.data["incidents"]] == ["open_incident"] and "u-6" in reply.text
    outsider = Actor(id="user:fin", kind="user", tenant_id="company", permissions=frozenset({"finance:read"}))
    with pytest.raises(ProblemError) as refused:
        await kernel.run_staff_command("incidents", actor=outsider, arguments={}, channel="test")
    assert refused.value.status == 403
    with pytest.raises(ProblemError) as bad:
        await kernel.run_staff_command("incidents", actor=DECIDER, arguments={"limit": 500}, channel="test")
    assert bad.value.status == 422


async def test_disabled_live_it_stops_consuming_events(make_agents):
    harness = await make_agents()
    kernel = harness.kernel
    runner = runner_of(kernel, AGENT)
    settings = {
        "storage": kernel.settings["storage"],
        "auth": kernel.settings["auth"],
        "agent_configuration": {"sample_interval": 3600},
        "plugins": {"disabled": ["agent_security"]},
    }
    result = await harness.apply(settings)
    assert result.applied and "agent_security" in result.changes["stopped"], result
    await wait_until(lambda: runner.stopping and runner.task is None, timeout=10)
    current = harness.kernel
    assert "agent_security" not in [a.name for a in registered_agents(current)]
    for _ in range(6):
        await _failed_login(current, "u-8", "10.0.0.8")
    await asyncio.sleep(0.4)
    assert runner.decided == 0 and runner.queue.qsize() <= 1
    assert await _store.listing(current, departments=["security"]) == []


# -- approvals (the workflows plugin on Temporal's time-skipping test server) ------------------


@pytest.fixture
async def approvals_env():
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=TEST_SERVER)
    yield env
    await env.shutdown()


async def _with_approvals(make_agents, env) -> Any:
    from botcriptofy_workflows import WorkflowsPlugin

    return await make_agents(plugins={"workflows": WorkflowsPlugin(client=env.client)}, workflows=FAST_WORKFLOWS)


async def _customer(harness) -> str:
    response = await harness.client.post(
        "/v1/auth/signup",
        json={"email": "victim@example.com", "password": "correct horse battery staple", "name": "Vic", "account_type": "trader"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["user"]["id"])


async def _propose_lock(harness, user_id: str) -> dict[str, Any]:
    row = await handle(
        harness.kernel, AGENT, Trigger("failed_logins", user_id, {"scope": "account", "failures": 15}, tenant_id="t", user_id=user_id)
    )
    assert (row["action"], row["outcome"]) == ("lock_account", "awaiting_approval") and row["approval_id"]
    return row


async def _outcome(harness, row) -> dict[str, Any]:
    await harness.kernel.workflows().wait(f"approval.{row['approval_id']}")
    await wait_until(lambda: _status(harness, row), timeout=10)
    (stored,) = [r for r in await _decisions(harness.kernel) if r["id"] == row["id"]]
    return stored


async def _status(harness, row) -> bool:
    return any(r["id"] == row["id"] and r["outcome"] != "awaiting_approval" for r in await _decisions(harness.kernel))


async def test_a_lock_waits_for_approval_and_runs_once_approved(make_agents, approvals_env, recorder):
    harness = await _with_approvals(make_agents, approvals_env)
    user_id = await _customer(harness)
    row = await _propose_lock(harness, user_id)
    await asyncio.sleep(0.3)
    assert recorder.of("auth.user_blocked") == []  # waiting
    await harness.kernel.decide_approval(row["approval_id"], approve=True, actor=DECIDER, reason="confirmed by phone")
    stored = await _outcome(harness, row)
    assert stored["outcome"] == "approved" and stored["outcome_detail"]["result"] == {"done": True, "blocked": user_id}
    await wait_until(lambda: recorder.of("auth.user_blocked"), timeout=10)
    assert [(e["user_id"], e["blocked"]) for e in recorder.of("auth.user_blocked")] == [(user_id, True)]


async def test_a_rejected_lock_never_runs(make_agents, approvals_env, recorder):
    harness = await _with_approvals(make_agents, approvals_env)
    user_id = await _customer(harness)
    row = await _propose_lock(harness, user_id)
    await harness.kernel.decide_approval(row["approval_id"], approve=False, actor=DECIDER, reason="false alarm")
    stored = await _outcome(harness, row)
    assert stored["outcome"] == "rejected"
    login = await harness.client.post("/v1/auth/login", json={"email": "victim@example.com", "password": "correct horse battery staple"})
    assert login.status_code == 200 and recorder.of("auth.user_blocked") == []


async def test_an_expired_lock_never_runs(make_agents, approvals_env, recorder):
    harness = await _with_approvals(make_agents, approvals_env)
    user_id = await _customer(harness)
    row = await _propose_lock(harness, user_id)
    await approvals_env.sleep(24 * 3600 + 1)
    stored = await _outcome(harness, row)
    assert stored["outcome"] == "expired" and recorder.of("auth.user_blocked") == []


async def test_the_handler_receives_only_the_event_types_it_counts(make_agents):
    harness = await make_agents(security={"activity_threshold": 3, "activity_events": ["auth.login_succeeded"]})
    kernel = harness.kernel
    (handler,) = [h for h in kernel.events.handlers if h.name == "agent_security.events"]
    assert "*" not in handler.types and {"auth.login_failed", "auth.login_succeeded"} <= handler.types
    assert not handler.matches("billing.payment_failed") and not handler.matches("kernel.notification_requested")
    from botcriptofy_auth._events import LoginSucceeded

    runner = runner_of(kernel, AGENT)
    for _ in range(4):  # a counted type: over the threshold of 3 actions, one incident
        event = LoginSucceeded(user_id="u-9", tenant_id="t-1", session_id="s-9", method="password", ip="10.1.1.1")
        await kernel.events.publish(event, tenant_id="t-1")
    await wait_until(lambda: runner.decided >= 1, timeout=10)
    await runner.idle()
    (row,) = await _decisions(kernel, subject="u-9")
    assert (row["trigger_kind"], row["trigger"]["data"]["actions"], row["action"]) == ("activity", 4, "open_incident")


def test_star_in_activity_events_subscribes_to_every_event():
    from botcriptofy_agent_security._agent import subscribed

    assert subscribed(SecuritySettings(activity_events=("*",))) == ("*",)
    assert "*" not in subscribed(SecuritySettings())


async def test_publishing_an_event_leaves_the_window_update_to_the_loop(kernel_harness):
    import botcriptofy_agent_security
    import botcriptofy_agents

    # No storage plugin, so no outbox: the agent's handler is detached, called once the publisher lets the loop run.
    harness = await kernel_harness(
        plugins={"agents": botcriptofy_agents, "agent_security": botcriptofy_agent_security},
        settings={"agent_security": {"failed_login_threshold": 2}},
    )
    kernel = harness.kernel
    runner = runner_of(kernel, AGENT)
    updates: list[str] = []
    original = runner.windows.hit

    def hit(key: Any, now: float, window: float, value: Any = None) -> int:
        updates.append(str(key[0]))
        return original(key, now, window, value)

    runner.windows.hit = hit  # type: ignore[method-assign]
    await _failed_login(kernel, "u-5", "10.0.0.5")
    assert updates == []  # publish() returned before any window was touched
    await _failed_login(kernel, "u-5", "10.0.0.5")
    await runner.idle()
    assert updates.count("failed") == 2 and runner.decided == 2  # the account's and the address's alert at 2
