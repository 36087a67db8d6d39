"""The subscriptions agent: rules at every boundary, billing's quota, trial and past-due events, churn through
business_metrics, fallbacks, key-account dunning pauses through approvals, shadow mode, live disable, least privilege."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from botcriptofy import Actor, ProblemError
from botcriptofy.testing import wait_until
from botcriptofy_agent_subscriptions import AGENT, CASES, SubscriptionsSettings, check_once, rules
from botcriptofy_agents import Trigger, _store, handle, load_cases, read_decisions, registered_agents, runner_of
from botcriptofy_billing import BillingPlugin, Money, PaymentFailed, QuotaExhausted, QuotaWarning, SubscriptionChanged, TrialEnding
from botcriptofy_billing._dunning import paused_until

from .business_support import FAST_WORKFLOWS, Figures, make_business
from .conftest import MODEL_NAME, decision_json
from .decisions import approval_settled, decisions_of, settle

pytestmark = pytest.mark.timeout(60)

TEST_SERVER = str(Path(sys.executable).parent / "temporal-test-server")
SHIPPED = load_cases(CASES)
MANAGER = Actor(
    id="user:subs-manager",
    kind="user",
    tenant_id="company",
    permissions=frozenset({"subscriptions:manage", "subscriptions:read", "subscriptions:act"}),
)


def test_at_least_thirty_cases_ship_with_the_agent():
    assert len(SHIPPED) >= 30
    assert {c.trigger.kind for c in SHIPPED} >= {"churn", "quota", "trial_ending", "past_due"}


@pytest.mark.parametrize("case", SHIPPED, ids=lambda c: f"line{c.line}-{c.trigger.kind}-{c.expected_action}")
def test_the_rules_decide_every_shipped_case(case):
    decision = rules(case.trigger, case.context, SubscriptionsSettings())
    assert decision.action == case.expected_action
    AGENT.decision.model_validate(decision.model_dump())


def test_thresholds_follow_the_settings():
    strict = SubscriptionsSettings(churn_rate=5, min_subscriptions=20, quota_warning_percent=50, trial_notice_days=7, key_plans=("pro",))
    assert rules(Trigger("churn", "platform", {"canceled": 2, "active": 17}), {}, strict).action == "none"  # 19 < 20
    assert rules(Trigger("churn", "platform", {"canceled": 2, "active": 18}), {}, strict).action == "notify"  # 10 %
    quota = {"quota": "bots", "used": 5, "limit": 10, "upgrade_to": "pro"}
    assert rules(Trigger("quota", "t", quota, tenant_id="t"), {}, strict).action == "contact_tenant"
    assert rules(Trigger("trial_ending", "t", {"days_left": 6.5}, tenant_id="t"), {}, strict).action == "contact_tenant"
    assert rules(Trigger("past_due", "t", {"plan": "pro", "final": False}, tenant_id="t"), {}, strict).action == "pause_dunning"


def _quota(event: type, used: int, limit: int, upgrade_to: str | None = "pro") -> Any:
    return event(tenant_id="t-1", quota="api_calls_per_month", period="2026-11", used=used, limit=limit, plan="free", upgrade_to=upgrade_to)


async def test_billing_events_become_one_decision_per_tenant_and_episode(make_agents, recorder):
    harness = await make_business(make_agents, agent_subscriptions={"approval_actions": []})
    kernel = harness.kernel
    publish = kernel.events.publish
    await publish(_quota(QuotaWarning, 800, 1000), tenant_id="t-1")
    await publish(_quota(QuotaWarning, 800, 1000), tenant_id="t-1")  # the same period and level: no second decision
    await publish(_quota(QuotaExhausted, 1000, 1000), tenant_id="t-1")
    soon = datetime.now(UTC) + timedelta(days=2, hours=12)
    await publish(TrialEnding(tenant_id="t-2", subscription_id="sub_2", plan="pro", trial_end=soon), tenant_id="t-2")
    changed = {"subscription_id": "sub_3", "previous_plan": "enterprise", "status": "past_due", "previous_status": "active"}
    await publish(SubscriptionChanged(tenant_id="t-3", plan="enterprise", **changed), tenant_id="t-3")
    await publish(SubscriptionChanged(tenant_id="t-4", plan="pro", **changed), tenant_id="t-4")
    over = dict(invoice_id="in_5", subscription_id="sub_5", amount_due=Money(amount_minor=2900, currency="BRL"), next_payment_attempt=None)
    await publish(PaymentFailed(tenant_id="t-5", attempt_count=4, final=True, **over), tenant_id="t-5")
    await publish(PaymentFailed(tenant_id="t-6", attempt_count=1, final=False, **over), tenant_id="t-6")  # retries go on: no trigger
    rows = await settle(AGENT, kernel, 6)
    await asyncio.sleep(0.3)
    rows = await decisions_of(AGENT, kernel)
    got = sorted((r["trigger_kind"], r["subject_tenant"], r["action"], r["outcome"]) for r in rows)
    assert got == [
        ("past_due", "t-3", "pause_dunning", "failed"),  # not in approval_actions here, and never run directly
        ("past_due", "t-4", "notify", "executed"),
        ("past_due", "t-5", "notify", "executed"),
        ("quota", "t-1", "contact_tenant", "executed"),
        ("quota", "t-1", "notify", "executed"),
        ("trial_ending", "t-2", "contact_tenant", "executed"),
    ]
    to_tenants = sorted((n.recipient, n.subject) for n in recorder.notifications if n.recipient.startswith("tenant:"))
    assert [r for r, _ in to_tenants] == ["tenant:t-1", "tenant:t-2"]
    categories = sorted(n.category for n in recorder.notifications if n.recipient.startswith("tenant:"))
    assert categories == ["subscriptions.quota", "subscriptions.trial_ending"]
    assert all("@" not in n.body for n in recorder.notifications)
    assert sum(n.recipient == "department:subscriptions" for n in recorder.notifications) == 3


async def test_churn_alerts_only_above_fifteen_percent(make_agents):
    counts = {"canceled": 15}
    figures = Figures(
        lambda since, until: {"subscriptions_canceled": counts["canceled"], "subscriptions_active": 80, "subscriptions_past_due": 5}
    )
    harness = await make_business(make_agents, plugins={"figures": figures})
    kernel = harness.kernel
    assert await check_once(kernel) == []  # 15 of 100: not above 15 %
    assert round((figures.windows[0][1] - figures.windows[0][0]).total_seconds() / 86400) == 30
    counts["canceled"] = 16  # 16 of 101
    (fired,) = await check_once(kernel)
    assert (fired.kind, fired.data["churn"]) == ("churn", 15.84)
    assert await check_once(kernel) == []  # once per day and level
    (row,) = await settle(AGENT, kernel, 1)
    assert (row["action"], row["outcome"]) == ("notify", "executed")


@pytest.mark.parametrize(
    ("reply", "delay", "reason"),
    [
        ("<html>", 0.0, "invalid_json"),
        ('{"action": "contact_tenant", "severity": "info"}', 0.0, "schema_invalid"),
        (decision_json("pause_dunning"), 0.0, "outside_policy"),
        (decision_json("notify"), 2.0, "timeout"),
    ],
)
async def test_a_failing_model_leaves_the_decision_to_the_rules_with_the_reason(make_agents, broken_ollama, recorder, reply, delay, reason):
    server = broken_ollama(reply, delay=delay)
    settings = {
        "provider": "ollama",
        "model": MODEL_NAME,
        "host": server.url,
        "timeout": 0.3 if reason == "timeout" else 10,
        "allowed_actions": ["notify", "open_incident"],
    }
    harness = await make_business(make_agents, agent_subscriptions=settings)
    row = await handle(harness.kernel, AGENT, Trigger("churn", "platform", {"canceled": 30, "active": 70}))
    assert (row["source"], row["fallback_reason"], row["action"], row["outcome"]) == ("rules", reason, "open_incident", "executed")
    assert [n.severity for n in recorder.notifications] == ["critical"]


async def test_shadow_mode_never_acts(make_agents, recorder):
    harness = await make_business(make_agents, agent_subscriptions={"shadow": True})
    kernel = harness.kernel
    trial = await handle(kernel, AGENT, Trigger("trial_ending", "tenant:t-1", {"days_left": 1.0, "plan": "pro"}, tenant_id="t-1"))
    pause = await handle(kernel, AGENT, Trigger("past_due", "tenant:t-2", {"plan": "enterprise", "final": False}, tenant_id="t-2"))
    assert [(r["action"], r["outcome"], r["approval_id"]) for r in (trial, pause)] == [
        ("contact_tenant", "shadow", None),
        ("pause_dunning", "shadow", None),
    ]
    assert recorder.notifications == [] and [a for a in recorder.audits if a.action.startswith("agents.")] == []


async def test_its_principal_cannot_read_other_departments(make_agents):
    harness = await make_business(make_agents)
    principal = await harness.kernel.service_actor("agent_subscriptions")
    assert principal.can("subscriptions:read") and not principal.can("finance:read")
    for department in ("finance", "security", "configuration"):
        with pytest.raises(ProblemError) as refused:
            await read_decisions(harness.kernel, principal, department=department)
        assert refused.value.status == 403


async def test_usage_and_churn_commands(make_agents):
    month = {"subscriptions_canceled": 3, "subscriptions_active": 27, "subscriptions_past_due": 0, "trials_ending_3d": 2}
    harness = await make_business(make_agents, plugins={"figures": Figures(lambda since, until: month), "billing": BillingPlugin()})
    kernel = harness.kernel
    commands = await kernel.staff_commands()
    assert {"usage", "churn", "subscription"} <= set(commands)
    await handle(
        kernel, AGENT, Trigger("quota", "tenant:t-1:bots", {"quota": "bots", "used": 8, "limit": 10, "upgrade_to": "pro"}, tenant_id="t-1")
    )
    await handle(kernel, AGENT, Trigger("quota", "tenant:t-2:bots", {"quota": "bots", "used": 10, "limit": 10}, tenant_id="t-2"))
    usage = await kernel.run_staff_command("usage", actor=MANAGER, arguments={}, channel="test", locale="en")
    assert usage.data["quotas"] == {"bots": {"at_80": 1, "at_100": 1}}
    churn = await kernel.run_staff_command("churn", actor=MANAGER, arguments={"days": 30}, channel="test", locale="pt-BR")
    assert churn.data["churn_percent"] == 10.0 and "10.0 %" in churn.text and churn.data["trials_ending_3d"] == 2
    with pytest.raises(ProblemError) as bad:
        await kernel.run_staff_command("churn", actor=MANAGER, arguments={"days": 0}, channel="test", locale="en")
    assert bad.value.status == 422


async def test_disabled_live_it_stops_consuming(make_agents):
    harness = await make_business(make_agents)
    kernel = harness.kernel
    runner = runner_of(kernel, AGENT)
    keep = {k: kernel.settings[k] for k in ("storage", "auth", "agent_finance")}
    result = await harness.apply({**keep, "plugins": {"disabled": ["agent_subscriptions"]}})
    assert result.applied and "agent_subscriptions" in result.changes["stopped"]
    await wait_until(lambda: runner.stopping, timeout=10)
    assert "agent_subscriptions" not in [a.name for a in registered_agents(harness.kernel)]
    await harness.kernel.events.publish(_quota(QuotaExhausted, 1000, 1000), tenant_id="t-1")
    await asyncio.sleep(0.3)
    assert runner.queue.empty() and await _store.listing(harness.kernel, departments=["subscriptions"]) == []


# -- a key account's dunning pause through an approval (billing's action, on Temporal's time-skipping server) ----


@pytest.fixture
async def approvals_env():
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=TEST_SERVER)
    yield env
    await env.shutdown()


async def _proposed(make_agents, env) -> tuple[Any, dict[str, Any]]:
    from botcriptofy_workflows import WorkflowsPlugin

    harness = await make_business(
        make_agents, plugins={"workflows": WorkflowsPlugin(client=env.client), "billing": BillingPlugin()}, workflows=FAST_WORKFLOWS
    )
    trigger = Trigger("past_due", "tenant:t-key", {"plan": "enterprise", "final": False}, tenant_id="t-key")
    row = await handle(harness.kernel, AGENT, trigger)
    assert (row["action"], row["outcome"]) == ("pause_dunning", "awaiting_approval") and row["approval_id"]
    return harness, row


async def test_a_key_account_pause_runs_only_once_approved(make_agents, approvals_env):
    harness, row = await _proposed(make_agents, approvals_env)
    await asyncio.sleep(0.2)
    assert await paused_until(harness.kernel, "t-key") is None  # waiting for a person
    await harness.kernel.decide_approval(row["approval_id"], approve=True, actor=MANAGER)
    stored = await approval_settled(AGENT, harness, row)
    assert stored["outcome"] == "approved" and stored["outcome_detail"]["result"]["tenant_id"] == "t-key"
    assert await paused_until(harness.kernel, "t-key") is not None and await paused_until(harness.kernel, "t-other") is None


async def test_a_rejected_pause_never_runs(make_agents, approvals_env):
    harness, row = await _proposed(make_agents, approvals_env)
    await harness.kernel.decide_approval(row["approval_id"], approve=False, actor=MANAGER, reason="they paid by bank transfer")
    assert (await approval_settled(AGENT, harness, row))["outcome"] == "rejected"
    assert await paused_until(harness.kernel, "t-key") is None


async def test_an_expired_pause_never_runs(make_agents, approvals_env):
    harness, row = await _proposed(make_agents, approvals_env)
    await approvals_env.sleep(24 * 3600 + 1)
    assert (await approval_settled(AGENT, harness, row))["outcome"] == "expired"
    assert await paused_until(harness.kernel, "t-key") is None
