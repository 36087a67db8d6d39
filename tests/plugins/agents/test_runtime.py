"""The runtime: the official ollama client against the local SmolLM2 server, every fallback reason, records, scoping, metrics."""

from __future__ import annotations

import asyncio
import json
import socket

import ollama
import pytest

import botcriptofy_agent_configuration
import botcriptofy_agent_configuration._agent as configuration_agent
from botcriptofy.testing import wait_until
from botcriptofy_agent_security import AGENT as SECURITY
from botcriptofy_agent_security import SecuritySettings
from botcriptofy_agents import Trigger, answer_token_bound, decide, handle, read_decisions, runner_of, stop_agent
from botcriptofy_auth._accounts import create_service_key

from .conftest import MODEL_NAME, decision_json

pytestmark = pytest.mark.timeout(60)

TRIGGER = Trigger("failed_logins", "u-1", {"scope": "account", "failures": 6, "window_s": 900}, tenant_id="t-1", user_id="u-1")
CONTEXT = {"decisions_24h": 0, "incidents_24h": 0, "pending_approvals": 0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def model_settings(host: str, **changes: object) -> SecuritySettings:
    return SecuritySettings(provider="ollama", model=MODEL_NAME, host=host, timeout=changes.pop("timeout", 60.0), **changes)  # type: ignore[arg-type]


async def test_the_official_client_speaks_to_the_local_server(local_ollama):
    client = ollama.AsyncClient(host=local_ollama.url)
    try:
        assert (await client.list()).models[0].model == MODEL_NAME
        response = await client.chat(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": "Failed logins: 6 in 15 minutes. Decide."}],
            format=SECURITY.schema,
            think=False,
            options={"temperature": 0, "num_predict": 160},
        )
        decision = SECURITY.decision.model_validate_json(response.message.content)  # grammar-constrained: always schema-valid
        assert decision.action in ("none", "notify", "open_incident", "lock_account", "revoke_sessions")
        with pytest.raises(ollama.ResponseError) as unknown:
            await client.chat(model="qwen3:0.6b", messages=[{"role": "user", "content": "hi"}])
        assert unknown.value.status_code == 404
    finally:
        await client._client.aclose()


async def test_a_model_decision_is_schema_valid_and_recorded_as_the_model_s(local_ollama, kernel_harness):
    import botcriptofy_agents

    harness = await kernel_harness(plugins={"agents": botcriptofy_agents})
    outcome = await decide(harness.kernel, SECURITY, model_settings(local_ollama.url), TRIGGER, CONTEXT)
    assert outcome.raw is not None
    SECURITY.decision.model_validate(json.loads(outcome.raw))
    assert outcome.source == "model" or outcome.reason == "outside_policy"
    sent = local_ollama.requests[-1]
    assert sent["format"] == SECURITY.schema and sent["think"] is False and sent["stream"] is False
    assert sent["options"]["num_predict"] == answer_token_bound(SECURITY.schema) and sent["keep_alive"] == "30m"
    assert "u-1" not in sent["messages"][1]["content"] or "@" not in sent["messages"][1]["content"]


@pytest.mark.parametrize(
    ("reply", "delay", "budget", "reason"),
    [
        ("the account looks compromised, lock it", 0.0, 5.0, "invalid_json"),
        (json.dumps({"action": "delete_database", "severity": "high"}), 0.0, 5.0, "schema_invalid"),
        (decision_json("notify", confidence=7), 0.0, 5.0, "schema_invalid"),
        (decision_json("revoke_sessions"), 0.0, 5.0, "outside_policy"),
        (decision_json("notify"), 2.0, 0.3, "timeout"),
    ],
)
async def test_a_failing_model_falls_back_to_the_rules_with_the_reason(broken_ollama, kernel_harness, reply, delay, budget, reason):
    import botcriptofy_agents

    server = broken_ollama(reply, delay=delay)
    harness = await kernel_harness(plugins={"agents": botcriptofy_agents})
    settings = model_settings(server.url, timeout=budget, allowed_actions=("notify", "open_incident"))
    outcome = await decide(harness.kernel, SECURITY, settings, TRIGGER, CONTEXT)
    assert (outcome.source, outcome.reason) == ("rules", reason)
    assert outcome.decision.action == "notify"  # the rules: 6 failures on an account
    if reason != "timeout":
        assert outcome.raw == reply
    if reason == "timeout":
        assert outcome.latency_ms < 1900


async def test_an_unreachable_model_falls_back(kernel_harness):
    import botcriptofy_agents

    harness = await kernel_harness(plugins={"agents": botcriptofy_agents})
    outcome = await decide(harness.kernel, SECURITY, model_settings(f"http://127.0.0.1:{free_port()}"), TRIGGER, CONTEXT)
    assert (outcome.source, outcome.reason, outcome.decision.action) == ("rules", "unreachable", "notify")


async def test_without_consent_the_model_is_not_asked(broken_ollama, kernel_harness):
    import botcriptofy_agents

    server = broken_ollama(decision_json("notify"))
    harness = await kernel_harness(plugins={"agents": botcriptofy_agents})
    outcome = await decide(harness.kernel, SECURITY, model_settings(server.url), TRIGGER, CONTEXT, consent=False)
    assert (outcome.source, outcome.reason) == ("rules", "no_consent")
    assert server.requests == []


async def test_decisions_are_recorded_and_scoped_by_department(make_agents, database_url, broken_ollama):
    server = broken_ollama("not json")
    harness = await make_agents(url=database_url, security={"provider": "ollama", "model": MODEL_NAME, "host": server.url, "shadow": True})
    kernel = harness.kernel
    row = await handle(kernel, SECURITY, TRIGGER)
    assert (row["source"], row["fallback_reason"], row["outcome"], row["raw_output"]) == ("rules", "invalid_json", "shadow", "not json")
    from botcriptofy_agent_configuration import AGENT as CONFIGURATION

    await handle(kernel, CONFIGURATION, Trigger("config_refused", "config", {"error": "bad"}))
    security = await kernel.service_actor("agent_security")
    assert [r["id"] for r in await read_decisions(kernel, security, department="security")] == [row["id"]]
    from botcriptofy import ProblemError

    with pytest.raises(ProblemError) as refused:
        await read_decisions(kernel, security, department="configuration")
    assert refused.value.status == 403
    # Over HTTP with a security viewer's key: its department only, 403 for another agent's, 401 without credentials.
    _, secret, _ = await create_service_key(kernel, department="security", role="viewer", name="reader", days=1)
    headers = {"X-API-Key": secret}
    listed = await harness.client.get("/v1/agents/decisions", headers=headers)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert [d["agent"] for d in body] == ["agent_security"]
    assert body[0]["fallback_reason"] == "invalid_json" and body[0]["context_digest"] and body[0]["prompt_version"] == "2/l2"
    other = await harness.client.get("/v1/agents/decisions", params={"agent": "agent_configuration"}, headers=headers)
    assert other.status_code == 403
    unknown = await harness.client.get("/v1/agents/decisions", params={"agent": "nope"}, headers=headers)
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "agent"
    bad_limit = await harness.client.get("/v1/agents/decisions", params={"limit": "0"}, headers=headers)
    assert bad_limit.status_code == 422
    assert (await harness.client.get("/v1/agents/decisions")).status_code == 401
    agents = await harness.client.get("/v1/agents", headers=headers)
    assert agents.status_code == 200
    (state,) = agents.json()
    assert state["name"] == "agent_security" and state["provider"] == "ollama" and state["shadow"] is True and state["running"]
    assert state["counters_24h"]["fallback:invalid_json"] == 1


async def test_provider_model_and_timeout_change_live(make_agents, broken_ollama, recorder):
    server = broken_ollama(decision_json("notify"))
    harness = await make_agents()
    kernel = harness.kernel
    first = await handle(kernel, SECURITY, TRIGGER)
    assert (first["provider"], first["source"], first["model"]) == ("rules", "rules", None)
    result = await harness.apply(
        {
            "storage": kernel.settings["storage"],
            "auth": kernel.settings["auth"],
            "agent_security": {"provider": "ollama", "model": MODEL_NAME, "host": server.url, "timeout": 3, "temperature": 0.5},
            "agent_configuration": {"sample_interval": 3600},
            "agents": {"keep_alive": "5m", "options": {"num_thread": 1}, "max_tokens": 99},
        }
    )
    assert result.applied and "agent_security" not in result.changes.get("restarted", []), result
    second = await handle(harness.kernel, SECURITY, TRIGGER)
    assert (second["provider"], second["source"], second["model"]) == ("ollama", "model", MODEL_NAME)
    sent = server.requests[-1]
    assert (sent["options"]["temperature"], sent["options"]["num_predict"], sent["options"]["num_thread"]) == (0.5, 99, 1)
    assert sent["keep_alive"] == "5m"
    assert second["outcome"] == "executed" and recorder.notifications[-1].recipient == "department:security"


async def test_metrics_count_decisions_fallbacks_and_latency(make_agents, broken_ollama):
    server = broken_ollama("{")
    harness = await make_agents(security={"provider": "ollama", "model": MODEL_NAME, "host": server.url})
    await handle(harness.kernel, SECURITY, TRIGGER)
    registry = harness.kernel.metrics
    assert registry.get_sample_value("botcriptofy_agent_fallbacks_total", {"agent": "agent_security", "reason": "invalid_json"}) == 1
    assert (
        registry.get_sample_value(
            "botcriptofy_agent_decisions_total", {"agent": "agent_security", "source": "rules", "outcome": "executed"}
        )
        == 1
    )
    assert registry.get_sample_value("botcriptofy_agent_decision_seconds_count", {"agent": "agent_security", "provider": "ollama"}) == 1


async def test_an_agents_periodic_job_ticks_in_the_worker_without_a_workflow_engine_and_stops_with_the_agent(make_agents, monkeypatch):
    calls: list[object] = []

    async def sample(kernel):
        calls.append(kernel)
        return []

    monkeypatch.setattr(configuration_agent, "sample_once", sample)
    harness = await make_agents(configuration={"sample_interval": 0.05})
    runner = runner_of(harness.kernel, configuration_agent.AGENT)
    assert [ticker.name for ticker in runner.tickers] == ["agent_configuration.sample"]
    await wait_until(lambda: len(calls) >= 3, timeout=5)  # once at start (immediately), then every 0.05 s
    assert botcriptofy_agent_configuration.register_schedules(kernel=harness.kernel) == []  # no engine: no schedule
    await stop_agent(harness.kernel, configuration_agent.AGENT)
    assert runner.tickers == []
    stopped = len(calls)
    await asyncio.sleep(0.2)
    assert len(calls) == stopped


def test_the_prompt_is_key_value_lines_and_shows_only_the_context_an_agent_names_for_the_trigger():
    from botcriptofy_agent_finance import AGENT as FINANCE
    from botcriptofy_agent_finance import FinanceSettings
    from botcriptofy_agents._engine import messages

    trigger = Trigger("payment_failures", "platform", {"failed": 10, "succeeded": 9, "rate": 52.63, "note": "two words"})
    context = {"payments_failed_24h": 3, "payments_succeeded_24h": 120, "mrr_cents": 1450000, "pending_approvals": 0, "flag": None}
    system, user = messages(FINANCE, FinanceSettings(), trigger, context)
    assert system["role"] == "system" and "Finance agent" in system["content"]
    assert user["content"] == (
        'trigger payment_failures: failed=10 succeeded=9 rate=52.63 note="two words"\n'
        "context: payments_failed_24h=3 payments_succeeded_24h=120 pending_approvals=0"
    )
    # An agent that names nothing for a kind shows its whole context; odd values are JSON.
    _, user = messages(SECURITY, SecuritySettings(), Trigger("failed_logins", "u-1", {"scope": "account"}), {"seen": [1, 2], "x": None})
    assert user["content"] == "trigger failed_logins: scope=account\ncontext: seen=[1,2] x=null"
