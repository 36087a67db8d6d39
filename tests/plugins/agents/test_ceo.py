"""The CEO agent: rules at every boundary, KPIs from the business_metrics hook, the daily summary from the other
agents' decisions, alerts, fallbacks, distribution through an approval, shadow mode, live disable, least privilege."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

import botcriptofy_agent_ceo
import botcriptofy_agent_security
import botcriptofy_agents
import botcriptofy_auth
import botcriptofy_storage
from botcriptofy import Actor, ProblemError, hookimpl
from botcriptofy.testing import wait_until
from botcriptofy_agent_ceo import AGENT, CASES, CeoSettings, indicators, look, rules, summary_due
from botcriptofy_agent_security import AGENT as SECURITY
from botcriptofy_agents import Trigger, _store, handle, load_cases, read_decisions, registered_agents, runner_of

from .conftest import FAST_HASH, MODEL_NAME, Recorder, decision_json
from .decisions import approval_settled, settle

pytestmark = pytest.mark.timeout(60)

TEST_SERVER = str(Path(sys.executable).parent / "temporal-test-server")
FAST_WORKFLOWS = {"retry_initial_interval": 0.01, "retry_maximum_interval": 0.05, "watch_interval": 0.05, "graceful_shutdown": 2}
SHIPPED = load_cases(CASES)
PRINCIPALS = {"agent_ceo": "ceo:member", "agent_security": "security:member"}
CEO = Actor(id="user:ceo", kind="user", tenant_id="company", permissions=frozenset({"ceo:read", "agents:read"}))
BOARD = Actor(id="user:ceo-manager", kind="user", tenant_id="company", permissions=frozenset({"ceo:*", "agents:read"}))


class Figures:
    """Test plugin: the business_metrics hook of a platform with these figures (a day's counts, a month's counts, levels)."""

    def __init__(self) -> None:
        self.day = {"signups": 7, "payments_succeeded": 90, "payments_failed": 10, "revenue_cents": 261000}
        self.month = {"trials_started": 20, "trials_converted": 5, "subscriptions_canceled": 12}
        self.levels = {"subscriptions_active": 88, "subscriptions_past_due": 3, "mrr_cents": 290000}
        self.calls: list[tuple[datetime, datetime]] = []

    @hookimpl
    def business_metrics(self, kernel: Any, since: datetime, until: datetime) -> dict[str, int]:
        self.calls.append((since, until))
        counts = self.day if until - since <= timedelta(days=1) else self.month
        return {**counts, **self.levels}


def test_at_least_thirty_cases_ship_with_the_agent():
    assert len(SHIPPED) >= 30
    assert {c.trigger.kind for c in SHIPPED} == {"daily_summary", "kpi", "critical_decisions"}


@pytest.mark.parametrize("case", SHIPPED, ids=lambda c: f"line{c.line}-{c.trigger.kind}-{c.expected_action}")
def test_the_rules_decide_every_shipped_case(case):
    decision = rules(case.trigger, case.context, CeoSettings())
    assert decision.action == case.expected_action
    AGENT.decision.model_validate(decision.model_dump())


def test_thresholds_and_severities_follow_the_settings():
    def kpi(name: str, rate: float, volume: int = 100, settings: CeoSettings | None = None) -> tuple[str, str]:
        decided = rules(Trigger("kpi", name, {"kpi": name, "rate": rate, "volume": volume}), {}, settings or CeoSettings())
        return decided.action, decided.severity

    assert kpi("payments_failed_rate", 0.0999) == ("alert", "high") and kpi("payments_failed_rate", 0.10) == ("alert", "critical")
    assert kpi("churn_rate", 0.2999) == ("alert", "high") and kpi("churn_rate", 0.30) == ("alert", "critical")
    strict = CeoSettings(failed_payment_rate=0.01, min_payments=1, churn_rate=0.5, high_decisions=2)
    assert kpi("payments_failed_rate", 0.011, 1, strict)[0] == "alert" and kpi("churn_rate", 0.3, 100, strict)[0] == "none"
    assert rules(Trigger("critical_decisions", "d", {"critical": 0, "high": 2}), {}, strict).action == "alert"
    assert rules(Trigger("daily_summary", "s"), {"alerts": 2}, strict).severity == "warning"
    assert rules(Trigger("daily_summary", "s"), {"alerts": 0}, strict).severity == "info"


def test_indicators_are_computed_from_the_figures_reported_and_none_otherwise():
    found = indicators(
        {"payments_succeeded": 95, "payments_failed": 5, "signups": 3}, {"subscriptions_active": 85, "subscriptions_canceled": 15}
    )
    assert (found["payments_attempts_24h"], found["payments_failed_rate"], found["churn_rate_30d"]) == (100, 0.05, 0.15)
    assert found["signups_24h"] == 3 and found["mrr_cents"] is None and found["trial_conversion_30d"] is None
    empty = indicators({}, {})
    assert all(value is None for value in empty.values())


@pytest.fixture
def figures() -> Figures:
    return Figures()


@pytest.fixture
async def make_ceo(kernel_harness: Any, recorder: Recorder, figures: Figures, tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    """``await make_ceo(ceo=..., plugins=..., **sections)``: storage, auth, the runtime, the security and CEO agents, figures."""

    async def make(*, ceo: dict[str, Any] | None = None, plugins: dict[str, Any] | None = None, **sections: Any) -> Any:
        merged = {
            "storage": botcriptofy_storage,
            "auth": botcriptofy_auth,
            "agents": botcriptofy_agents,
            "agent_security": botcriptofy_agent_security,
            "agent_ceo": botcriptofy_agent_ceo,
            "figures": figures,
            "recorder": recorder,
            **(plugins or {}),
        }
        settings = {
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/ceo.db", "relay_poll_interval": 0.05},
            "auth": {**FAST_HASH, "service_principals": PRINCIPALS},
            "agent_security": {},
            "agent_ceo": {"watch_interval": 3600, **(ceo or {})},
            **sections,
        }
        return await kernel_harness(plugins=merged, settings=settings)

    yield make


async def _security_decisions(kernel: Any) -> None:
    """Two decisions of the security agent: an incident (high) and a revocation proposal (critical)."""
    await handle(kernel, SECURITY, Trigger("account_locked", "u-1", {"failures": 15}, tenant_id="t-1", user_id="u-1"))
    await handle(kernel, SECURITY, Trigger("token_reuse", "u-2", {}, tenant_id="t-2", user_id="u-2"))


async def test_the_daily_summary_reports_kpis_and_the_agents_decisions(make_ceo, recorder, figures):
    harness = await make_ceo()
    kernel = harness.kernel
    await _security_decisions(kernel)
    recorder.notifications.clear()
    assert summary_due(kernel) is not None
    (row,) = await settle(AGENT, kernel, 1)
    assert (row["trigger_kind"], row["action"], row["outcome"]) == ("daily_summary", "send_summary", "executed")
    (sent,) = recorder.notifications
    assert sent.recipient == "department:ceo" and sent.category == "agents.ceo"
    body = sent.body
    assert "MRR R$ 2.900,00" in body and "Cadastros 24 h: 7" in body and "100 tentativas, 10 falhas (10.0%)" in body
    assert "5 convertidos (25.0%)" in body and "churn 30 d 12.0%" in body
    assert "security: 2 decisões" in body and "1 críticas" in body
    assert sent.severity == "warning" and row["decision"]["severity"] == "warning"  # failed payments above 5 %, a critical decision
    assert "u-1" not in body and "u-2" not in body
    assert {until - since for since, until in figures.calls} == {timedelta(days=1), timedelta(days=30)}


async def test_the_look_alerts_on_kpis_once_a_day_and_on_critical_decisions(make_ceo, recorder, figures):
    harness = await make_ceo()
    kernel = harness.kernel
    figures.month["subscriptions_canceled"] = 22  # 22 / (88 + 22) = 20 % churn
    fired = await look(kernel)
    assert sorted(t.subject for t in fired) == ["churn_rate", "payments_failed_rate"]
    await _security_decisions(kernel)
    again = await look(kernel)
    assert [t.kind for t in again] == ["critical_decisions"] and again[0].data["critical"] == 1
    assert await look(kernel) == []  # nothing new since the previous look, KPIs already alerted today
    rows = await settle(AGENT, kernel, 3)
    assert sorted((r["subject"], r["action"], r["decision"]["severity"]) for r in rows if r["trigger_kind"] == "kpi") == [
        ("churn_rate", "alert", "high"),
        ("payments_failed_rate", "alert", "critical"),
    ]
    reply = await kernel.run_staff_command("alerts", actor=CEO, arguments={"limit": 5}, channel="test", locale="en")
    assert len(reply.data["alerts"]) == 3 and [c["action"] for c in reply.data["critical"]] == ["revoke_sessions"]


async def test_under_the_thresholds_the_look_stays_quiet(make_ceo, figures):
    harness = await make_ceo()
    figures.day.update(payments_succeeded=95, payments_failed=5)  # exactly 5 %: not above
    figures.month["subscriptions_canceled"] = 15  # 15 / 103 < 15 %
    assert await look(harness.kernel) == []


async def test_commands_report_kpis_and_refuse_outsiders(make_ceo):
    harness = await make_ceo()
    kernel = harness.kernel
    await _security_decisions(kernel)
    report = await kernel.run_staff_command("report", actor=CEO, arguments={}, channel="test", locale="en")
    assert report.text.startswith("Executive summary") and report.data["agents"]["security"]["decisions"] == 2
    kpis = await kernel.run_staff_command("kpis", actor=CEO, arguments={"days": 30}, channel="test", locale="en")
    assert kpis.data["figures"]["subscriptions_canceled"] == 12 and kpis.data["rates"]["churn_rate_30d"] == 0.12
    outsider = Actor(id="user:sec", kind="user", tenant_id="company", permissions=frozenset({"security:read"}))
    for name in ("report", "kpis", "alerts"):
        with pytest.raises(ProblemError) as refused:
            await kernel.run_staff_command(name, actor=outsider, arguments={}, channel="test")
        assert refused.value.status == 403
    with pytest.raises(ProblemError) as bad:
        await kernel.run_staff_command("kpis", actor=CEO, arguments={"days": 0}, channel="test")
    assert bad.value.status == 422


@pytest.mark.parametrize(
    ("reply", "delay", "reason"),
    [
        ("{", 0.0, "invalid_json"),
        ('{"action": "alert", "severity": "high", "confidence": 7, "rationale": "x"}', 0.0, "schema_invalid"),
        (decision_json("distribute_report"), 0.0, "outside_policy"),
        (decision_json("alert"), 2.0, "timeout"),
    ],
)
async def test_a_failing_model_leaves_the_decision_to_the_rules_with_the_reason(make_ceo, broken_ollama, recorder, reply, delay, reason):
    server = broken_ollama(reply, delay=delay)
    timeout = 0.3 if reason == "timeout" else 10
    settings = {
        "provider": "ollama",
        "model": MODEL_NAME,
        "host": server.url,
        "timeout": timeout,
        "allowed_actions": ["send_summary", "alert"],
    }
    harness = await make_ceo(ceo=settings)
    row = await handle(harness.kernel, AGENT, Trigger("kpi", "churn_rate", {"kpi": "churn_rate", "rate": 0.2, "volume": 100}))
    assert (row["source"], row["fallback_reason"], row["action"], row["outcome"]) == ("rules", reason, "alert", "executed")
    assert [n.recipient for n in recorder.notifications] == ["department:ceo"]


async def test_the_local_model_decides_a_case(make_ceo, local_ollama):
    harness = await make_ceo(ceo={"provider": "ollama", "model": MODEL_NAME, "host": local_ollama.url, "timeout": 60, "shadow": True})
    row = await handle(harness.kernel, AGENT, Trigger("critical_decisions", "d", {"critical": 3, "high": 1, "departments": ["security"]}))
    assert (row["provider"], row["model"]) == ("ollama", MODEL_NAME) and row["raw_output"]
    if row["fallback_reason"] in (None, "outside_policy"):  # the official client's answer, validated
        AGENT.decision.model_validate(json.loads(row["raw_output"]))
    else:  # a 135M model's answer cut at max_tokens: the rules decided, and the record says so
        assert (row["source"], row["fallback_reason"]) in (("rules", "invalid_json"), ("rules", "schema_invalid"))
    assert row["outcome"] in ("shadow", "no_action")


async def test_shadow_mode_never_acts(make_ceo, recorder):
    harness = await make_ceo(ceo={"shadow": True, "board_recipient": "email:board@botcriptofy.example"})
    kernel = harness.kernel
    alert = await handle(kernel, AGENT, Trigger("critical_decisions", "d", {"critical": 2, "high": 0}))
    summary = await handle(kernel, AGENT, Trigger("daily_summary", "summary:2026-11-29", {"day": "2026-11-29"}))
    assert [(r["action"], r["outcome"], r["approval_id"]) for r in (alert, summary)] == [
        ("alert", "shadow", None),
        ("distribute_report", "shadow", None),
    ]
    assert recorder.notifications == [] and [a for a in recorder.audits if a.action.startswith("agents.")] == []


async def test_its_principal_reads_decisions_of_every_department_and_nothing_else(make_ceo):
    harness = await make_ceo()
    kernel = harness.kernel
    await _security_decisions(kernel)
    principal = await kernel.service_actor("agent_ceo")
    assert principal.can("agents:read") and principal.can("ceo:act")
    assert not any(principal.can(p) for p in ("security:read", "finance:read", "audit:read", "users:read", "users:pii", "sessions:revoke"))
    assert len(await read_decisions(kernel, principal, department="security")) == 2  # agents:read
    with pytest.raises(ProblemError) as refused:
        await kernel.run_staff_command("incidents", actor=principal, arguments={}, channel="test")
    assert refused.value.status == 403
    with pytest.raises(ProblemError) as refused:
        await kernel.run_staff_command("user", actor=principal, arguments={"email": "a@example.com"}, channel="test")
    assert refused.value.status == 403
    security = await kernel.service_actor("agent_security")  # and the other way round: no agents:read
    with pytest.raises(ProblemError):
        await read_decisions(kernel, security, department="ceo")


async def test_ceo_staff_read_every_agents_decisions_over_http(make_ceo):
    from support import staff

    harness = await make_ceo()
    await _security_decisions(harness.kernel)
    viewer = await staff(harness, "ceo@botcriptofy.example", {"ceo": "viewer"})
    listed = await harness.client.get("/v1/agents/decisions", params={"agent": "agent_security"}, headers=viewer)
    assert listed.status_code == 200, listed.text
    assert sorted(d["action"] for d in listed.json()) == ["open_incident", "revoke_sessions"]
    agents = await harness.client.get("/v1/agents", headers=viewer)
    assert sorted(a["name"] for a in agents.json()) == ["agent_ceo", "agent_security"]
    support = await staff(harness, "sac@botcriptofy.example", {"support": "manager"})
    refused = await harness.client.get("/v1/agents/decisions", params={"agent": "agent_security"}, headers=support)
    assert refused.status_code == 403


async def test_disabled_live_it_stops_consuming(make_ceo):
    harness = await make_ceo()
    kernel = harness.kernel
    runner = runner_of(kernel, AGENT)
    settings = {k: kernel.settings[k] for k in ("storage", "auth", "agent_security")}
    result = await harness.apply({**settings, "plugins": {"disabled": ["agent_ceo"]}})
    assert result.applied and "agent_ceo" in result.changes["stopped"], result
    await wait_until(lambda: runner.stopping and runner.task is None, timeout=10)
    current = harness.kernel
    assert "agent_ceo" not in [a.name for a in registered_agents(current)]
    assert summary_due(current) is None and await look(current) == []
    await asyncio.sleep(0.2)
    assert runner.decided == 0 and await _store.listing(current, departments=["ceo"]) == []


# -- distributing the summary to the board, through an approval -----------------------------------


@pytest.fixture
async def approvals_env():
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=TEST_SERVER)
    yield env
    await env.shutdown()


BOARD_ADDRESS = "email:board@botcriptofy.example"


async def _proposed(make_ceo, env) -> tuple[Any, dict[str, Any]]:
    from botcriptofy_workflows import WorkflowsPlugin

    harness = await make_ceo(
        ceo={"board_recipient": BOARD_ADDRESS}, plugins={"workflows": WorkflowsPlugin(client=env.client)}, workflows=FAST_WORKFLOWS
    )
    schedules = {s.id: s for s in botcriptofy_agent_ceo.register_schedules(kernel=harness.kernel)}
    assert (schedules["daily_summary"].cron, schedules["daily_summary"].time_zone) == ("0 8 * * *", "America/Sao_Paulo")
    assert schedules["look"].interval == 3600
    row = await handle(harness.kernel, AGENT, Trigger("daily_summary", "summary:2026-11-29", {"day": "2026-11-29"}))
    assert (row["action"], row["outcome"]) == ("distribute_report", "awaiting_approval") and row["approval_id"]
    return harness, row


def _to_board(recorder: Recorder) -> list[Any]:
    return [n for n in recorder.notifications if n.recipient == BOARD_ADDRESS]


async def test_the_distribution_waits_for_approval_and_runs_once_approved(make_ceo, approvals_env, recorder):
    harness, row = await _proposed(make_ceo, approvals_env)
    await asyncio.sleep(0.2)
    assert _to_board(recorder) == []  # waiting for a CEO manager
    await harness.kernel.decide_approval(row["approval_id"], approve=True, actor=BOARD, reason="ok")
    stored = await approval_settled(AGENT, harness, row)
    assert stored["outcome"] == "approved" and stored["outcome_detail"]["result"]["sent"] == [BOARD_ADDRESS, "department:ceo"]
    (sent,) = _to_board(recorder)
    assert sent.subject == "[CEO] Resumo executivo 2026-11-29" and sent.body.startswith("Resumo executivo 2026-11-29")
    assert "MRR R$ 2.900,00" in sent.body


async def test_a_rejected_distribution_never_runs(make_ceo, approvals_env, recorder):
    harness, row = await _proposed(make_ceo, approvals_env)
    await harness.kernel.decide_approval(row["approval_id"], approve=False, actor=BOARD, reason="not today")
    assert (await approval_settled(AGENT, harness, row))["outcome"] == "rejected" and _to_board(recorder) == []


async def test_an_expired_distribution_never_runs(make_ceo, approvals_env, recorder):
    harness, row = await _proposed(make_ceo, approvals_env)
    await approvals_env.sleep(24 * 3600 + 1)
    assert (await approval_settled(AGENT, harness, row))["outcome"] == "expired" and _to_board(recorder) == []
