"""The finance agent: rules at every boundary, windows over billing's events, figures through business_metrics,
fallbacks, dunning pauses through approvals, shadow mode, live disable, least privilege."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from botcriptofy import Actor, ProblemError
from botcriptofy.testing import wait_until
from botcriptofy_agent_finance import AGENT, CASES, FinanceSettings, check_once, rules
from botcriptofy_agents import Trigger, _store, handle, load_cases, read_decisions, registered_agents, runner_of
from botcriptofy_billing import BillingPlugin, Money, PaymentFailed, PaymentSucceeded, Refunded
from botcriptofy_billing._dunning import paused_until

from .business_support import FAST_WORKFLOWS, make_business, weeks
from .conftest import MODEL_NAME, decision_json
from .decisions import approval_settled, decisions_of, settle

pytestmark = pytest.mark.timeout(60)

TEST_SERVER = str(Path(sys.executable).parent / "temporal-test-server")
SHIPPED = load_cases(CASES)
MANAGER = Actor(
    id="user:fin-manager", kind="user", tenant_id="company", permissions=frozenset({"billing:dunning", "finance:read", "finance:act"})
)


def test_at_least_thirty_cases_ship_with_the_agent():
    assert len(SHIPPED) >= 30
    assert {c.trigger.kind for c in SHIPPED} >= {"payment_failures", "revenue", "refund"}


@pytest.mark.parametrize("case", SHIPPED, ids=lambda c: f"line{c.line}-{c.trigger.kind}-{c.expected_action}")
def test_the_rules_decide_every_shipped_case(case):
    decision = rules(case.trigger, case.context, FinanceSettings())
    assert decision.action == case.expected_action
    AGENT.decision.model_validate(decision.model_dump())


def test_thresholds_follow_the_settings():
    strict = FinanceSettings(failure_rate=1, min_payments=10, pause_dunning_rate=10, revenue_drop=5, large_refund_cents=100)
    assert rules(Trigger("payment_failures", "platform", {"failed": 1, "succeeded": 8}), {}, strict).action == "none"  # 9 < 10
    assert rules(Trigger("payment_failures", "platform", {"failed": 1, "succeeded": 98}), {}, strict).action == "notify"
    assert rules(Trigger("payment_failures", "platform", {"failed": 1, "succeeded": 9}), {}, strict).action == "pause_dunning"
    assert rules(Trigger("revenue", "platform", {"revenue_cents": 94000, "previous_cents": 100000}), {}, strict).action == "notify"
    assert rules(Trigger("refund", "c", {"amount_cents": 100, "refunds_24h": 1}), {}, strict).action == "notify"


async def _payment(kernel: Any, n: int, *, failed: bool) -> None:
    if failed:
        event: Any = PaymentFailed(
            tenant_id=f"t-{n}",
            invoice_id=f"in_{n}",
            subscription_id=None,
            amount_due=Money(amount_minor=2900, currency="BRL"),
            attempt_count=1,
            next_payment_attempt=None,
            final=False,
        )
    else:
        event = PaymentSucceeded(
            tenant_id=f"t-{n}", invoice_id=f"in_{n}", subscription_id=None, amount_paid=Money(amount_minor=2900, currency="BRL")
        )
    await kernel.events.publish(event, tenant_id=f"t-{n}")


async def test_payment_failures_cost_one_decision_per_window_and_level(make_agents, recorder):
    harness = await make_business(make_agents, agent_finance={"approval_actions": []})
    kernel = harness.kernel
    for n in range(19):
        await _payment(kernel, n, failed=False)
    await _payment(kernel, 100, failed=True)  # 1 of 20: 5 %, not above
    await asyncio.sleep(0.5)
    await runner_of(kernel, AGENT).idle()
    assert await decisions_of(AGENT, kernel) == []
    await _payment(kernel, 101, failed=True)  # 2 of 21: above 5 %
    for n in range(102, 112):  # up to 12 of 31: 38.7 %, past the 30 % pause level once
        await _payment(kernel, n, failed=True)
    rows = await settle(AGENT, kernel, 2)
    assert [(r["trigger"]["data"]["failed"], r["trigger"]["data"]["succeeded"], r["action"]) for r in rows] == [
        (2, 19, "notify"),
        (9, 19, "pause_dunning"),
    ]
    # pause_dunning is not in approval_actions here and never runs directly: it fails instead of acting.
    assert [r["outcome"] for r in rows] == ["executed", "failed"]
    (sent,) = recorder.notifications
    assert sent.recipient == "department:finance" and sent.category == "agents.finance"


async def test_refunds_report_large_ones_and_spikes(make_agents):
    harness = await make_business(make_agents)
    kernel = harness.kernel

    async def refund(n: int, cents: int) -> None:
        money = Money(amount_minor=cents, currency="BRL")
        await kernel.events.publish(
            Refunded(tenant_id="t-9", charge_id=f"ch_{n}", amount=money, amount_refunded=money, full=True), tenant_id="t-9"
        )

    await refund(1, 49999)  # below the large-refund line: nothing
    await refund(2, 50000)
    await refund(3, 100)
    await refund(4, 100)
    await refund(5, 100)  # the 5th in 24 hours: a spike
    rows = await settle(AGENT, kernel, 2)
    assert [(r["subject"], r["trigger"]["data"]["refunds_24h"], r["action"]) for r in rows] == [
        ("charge:ch_2", 2, "notify"),
        ("platform", 5, "open_incident"),
    ]


async def test_the_figures_check_compares_revenue_week_over_week(make_agents):
    figures = weeks({"revenue_cents": 89999, "payments_failed": 1, "payments_succeeded": 99}, {"revenue_cents": 100000})
    harness = await make_business(make_agents, plugins={"figures": figures})
    kernel = harness.kernel
    fired = await check_once(kernel)
    assert [(t.kind, t.data["previous_cents"]) for t in fired] == [("revenue", 100000)]
    assert await check_once(kernel) == []  # once per day and level
    (row,) = await settle(AGENT, kernel, 1)
    assert (row["action"], row["outcome"]) == ("notify", "executed")
    spans = {round((until - since).total_seconds() / 86400) for since, until in figures.windows}
    assert spans == {1, 7}


async def test_a_ten_percent_drop_is_not_above_the_threshold(make_agents):
    harness = await make_business(make_agents, plugins={"figures": weeks({"revenue_cents": 90000}, {"revenue_cents": 100000})})
    assert await check_once(harness.kernel) == []


@pytest.mark.parametrize(
    ("reply", "delay", "reason"),
    [
        ("pause everything", 0.0, "invalid_json"),
        ('{"action": "notify", "severity": "loud"}', 0.0, "schema_invalid"),
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
    harness = await make_business(make_agents, agent_finance=settings)
    row = await handle(harness.kernel, AGENT, Trigger("revenue", "platform", {"revenue_cents": 60000, "previous_cents": 100000}))
    assert (row["source"], row["fallback_reason"], row["action"], row["outcome"]) == ("rules", reason, "open_incident", "executed")
    assert [n.severity for n in recorder.notifications] == ["critical"]


async def test_shadow_mode_never_acts(make_agents, recorder):
    harness = await make_business(make_agents, agent_finance={"shadow": True})
    kernel = harness.kernel
    notify = await handle(kernel, AGENT, Trigger("refund", "charge:ch_1", {"amount_cents": 90000, "refunds_24h": 1}))
    pause = await handle(kernel, AGENT, Trigger("payment_failures", "platform", {"failed": 50, "succeeded": 50}))
    assert [(r["action"], r["outcome"], r["approval_id"]) for r in (notify, pause)] == [
        ("notify", "shadow", None),
        ("pause_dunning", "shadow", None),
    ]
    assert recorder.notifications == [] and [a for a in recorder.audits if a.action.startswith("agents.")] == []


async def test_its_principal_cannot_read_other_departments(make_agents):
    harness = await make_business(make_agents)
    principal = await harness.kernel.service_actor("agent_finance")
    assert principal.can("finance:read") and principal.can("finance:act") and not principal.can("billing:dunning")
    for department in ("security", "subscriptions", "configuration"):
        with pytest.raises(ProblemError) as refused:
            await read_decisions(harness.kernel, principal, department=department)
        assert refused.value.status == 403


async def test_staff_commands_do_not_take_billings_payments(make_agents):
    figures = weeks(
        {"revenue_cents": 120000, "mrr_cents": 500000, "refunds": 1, "refunds_cents": 2900},
        {"revenue_cents": 100000},
        day={"payments_failed": 1, "payments_succeeded": 3},
    )
    harness = await make_business(make_agents, plugins={"figures": figures, "billing": BillingPlugin()})
    kernel = harness.kernel
    commands = await kernel.staff_commands()
    assert {"revenue", "paymentstats", "payments"} <= set(commands)
    assert commands["payments"].handler.__module__ == "botcriptofy_billing._commands"  # billing keeps its own
    revenue = await kernel.run_staff_command("revenue", actor=MANAGER, arguments={}, channel="test", locale="en")
    assert revenue.data["revenue_cents"] == 120000 and revenue.data["change_percent"] == 20.0 and "+20.0 %" in revenue.text
    stats = await kernel.run_staff_command("paymentstats", actor=MANAGER, arguments={}, channel="test", locale="en")
    assert (stats.data["payments_failed_24h"], stats.data["failure_percent"]) == (1, 25.0)
    outsider = Actor(id="user:sec", kind="user", tenant_id="company", permissions=frozenset({"security:read"}))
    with pytest.raises(ProblemError) as refused:
        await kernel.run_staff_command("revenue", actor=outsider, arguments={}, channel="test", locale="en")
    assert refused.value.status == 403


async def test_disabled_live_it_stops_consuming(make_agents):
    harness = await make_business(make_agents)
    kernel = harness.kernel
    runner = runner_of(kernel, AGENT)
    keep = {k: kernel.settings[k] for k in ("storage", "auth", "agent_subscriptions")}
    result = await harness.apply({**keep, "plugins": {"disabled": ["agent_finance"]}})
    assert result.applied and "agent_finance" in result.changes["stopped"]
    await wait_until(lambda: runner.stopping, timeout=10)
    assert "agent_finance" not in [a.name for a in registered_agents(harness.kernel)]
    for n in range(30):
        await _payment(harness.kernel, n, failed=True)
    await asyncio.sleep(0.3)
    assert runner.windows.count(("payments", "billing.payment_failed"), 0, 1e12) == 0
    assert await _store.listing(harness.kernel, departments=["finance"]) == []


# -- pausing dunning through an approval (billing's action, on Temporal's time-skipping server) ------


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
    row = await handle(harness.kernel, AGENT, Trigger("payment_failures", "platform", {"failed": 40, "succeeded": 60}))
    assert (row["action"], row["outcome"]) == ("pause_dunning", "awaiting_approval") and row["approval_id"]
    return harness, row


async def test_a_dunning_pause_runs_only_once_approved(make_agents, approvals_env):
    harness, row = await _proposed(make_agents, approvals_env)
    await asyncio.sleep(0.2)
    assert await paused_until(harness.kernel, "t-1") is None  # waiting for a person
    await harness.kernel.decide_approval(row["approval_id"], approve=True, actor=MANAGER)
    stored = await approval_settled(AGENT, harness, row)
    assert stored["outcome"] == "approved" and stored["outcome_detail"]["result"]["tenant_id"] is None
    assert await paused_until(harness.kernel, "t-1") is not None


async def test_a_rejected_pause_never_runs(make_agents, approvals_env):
    harness, row = await _proposed(make_agents, approvals_env)
    await harness.kernel.decide_approval(row["approval_id"], approve=False, actor=MANAGER, reason="ordinary card declines")
    assert (await approval_settled(AGENT, harness, row))["outcome"] == "rejected"
    assert await paused_until(harness.kernel, "t-1") is None


async def test_an_expired_pause_never_runs(make_agents, approvals_env):
    harness, row = await _proposed(make_agents, approvals_env)
    await approvals_env.sleep(24 * 3600 + 1)
    assert (await approval_settled(AGENT, harness, row))["outcome"] == "expired"
    assert await paused_until(harness.kernel, "t-1") is None
