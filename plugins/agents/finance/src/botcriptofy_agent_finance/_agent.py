"""The finance agent: payment failures over 24 hours, revenue drops week over week, refunds."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from botcriptofy import Actor, Envelope, acting_as
from botcriptofy_agents import (
    ActionRequest,
    ActionSpec,
    Agent,
    Decision,
    Periodic,
    Trigger,
    decision_model,
    notify,
    read_decisions,
    runner_of,
    settings_of,
)

from ._settings import ACTIONS, FinanceSettings

log = logging.getLogger("botcriptofy.agents.finance")

NAME = "agent_finance"
DEPARTMENT = "finance"
FinanceDecision = decision_model("FinanceDecision", ACTIONS)
PAUSE_ACTION = "billing.pause_dunning"
PAUSE_PERMISSION = "billing:dunning"
DAY = 86400.0
WEEK = 7 * DAY

INSTRUCTIONS = (
    "You watch payments and revenue: the share of failed payments over 24 hours, revenue of the last 7 days against "
    "the 7 before, and refunds. Propose pausing dunning reminders only when payments fail across the platform "
    "(a payment processor outage), never for ordinary failures."
)

# Events the agent reads (billing publishes them; the agent never imports billing).
FAILED, SUCCEEDED, REFUNDED = "billing.payment_failed", "billing.payment_succeeded", "billing.refunded"


def _decision(action: str, severity: str, confidence: float, rationale: str, **parameters: str) -> Decision:
    return FinanceDecision(action=action, severity=severity, confidence=confidence, rationale=rationale[:80], parameters=parameters)


def failure_percent(failed: int, succeeded: int) -> float:
    total = failed + succeeded
    return 100.0 * failed / total if total else 0.0


def drop_percent(revenue: int, previous: int) -> float:
    return 100.0 * (previous - revenue) / previous if previous > 0 else 0.0


def rules(trigger: Trigger, context: Mapping[str, Any], settings: FinanceSettings) -> Decision:
    """The deterministic decision (SPEC §7 thresholds); the fallback whenever the model fails."""
    data = trigger.data
    kind = trigger.kind
    if kind == "payment_failures":
        failed, succeeded = int(data.get("failed", 0)), int(data.get("succeeded", 0))
        if failed + succeeded < settings.min_payments:
            return _decision("none", "info", 0.8, f"Only {failed + succeeded} payments in the window: too few to judge.")
        rate = failure_percent(failed, succeeded)
        if rate >= settings.pause_dunning_rate:
            return _decision("pause_dunning", "critical", 0.8, f"{rate:.1f} % of payments failed: likely a processor outage.")
        if rate > settings.failure_rate:
            return _decision("notify", "high", 0.85, f"{rate:.1f} % of payments failed in 24 hours.")
        return _decision("none", "info", 0.9, f"{rate:.1f} % of payments failed: within the normal range.")
    if kind == "revenue":
        revenue, previous = int(data.get("revenue_cents", 0)), int(data.get("previous_cents", 0))
        if previous < settings.min_revenue_cents:
            return _decision("none", "info", 0.7, "The earlier week's revenue is too small to compare.")
        drop = drop_percent(revenue, previous)
        if drop >= settings.revenue_incident_drop:
            return _decision("open_incident", "critical", 0.85, f"Revenue fell {drop:.1f} % week over week.")
        if drop > settings.revenue_drop:
            return _decision("notify", "warning", 0.85, f"Revenue fell {drop:.1f} % week over week.")
        return _decision("none", "info", 0.9, f"Revenue changed {-drop:+.1f} % week over week.")
    if kind == "refund":
        refunds, amount = int(data.get("refunds_24h", 0)), int(data.get("amount_cents", 0))
        if refunds >= settings.refund_spike:
            return _decision("open_incident", "high", 0.8, f"{refunds} refunds in 24 hours.")
        if amount >= settings.large_refund_cents:
            return _decision("notify", "warning", 0.85, f"A refund of {amount / 100:.2f} was made.")
        return _decision("none", "info", 0.9, "An ordinary refund.")
    return _decision("none", "info", 0.5, f"No rule for '{kind}'.")


async def figures(kernel: Any, since: datetime, until: datetime) -> dict[str, int]:
    """The platform's business figures for ``[since, until)``, merged from every plugin that keeps some."""
    merged: dict[str, int] = {}
    for found in (await kernel.broadcast("business_metrics", kernel=kernel, since=since, until=until)).values():
        if isinstance(found, Mapping):
            merged.update({str(k): int(v) for k, v in found.items()})
    return merged


async def gather(kernel: Any, actor: Actor, trigger: Trigger) -> dict[str, Any]:
    """Read-only context: aggregates from ``business_metrics`` and this department's recent decisions (no personal data)."""
    now = datetime.now(UTC)
    day = await figures(kernel, now - timedelta(days=1), now)
    week = await figures(kernel, now - timedelta(days=7), now)
    before = await figures(kernel, now - timedelta(days=14), now - timedelta(days=7))
    earlier = await read_decisions(kernel, actor, department=DEPARTMENT, since=now - timedelta(hours=24), limit=200)
    context: dict[str, Any] = {
        "payments_failed_24h": day.get("payments_failed"),
        "payments_succeeded_24h": day.get("payments_succeeded"),
        "refunds_24h": day.get("refunds"),
        "refunds_cents_24h": day.get("refunds_cents"),
        "revenue_7d_cents": week.get("revenue_cents"),
        "revenue_prev_7d_cents": before.get("revenue_cents"),
        "mrr_cents": week.get("mrr_cents"),
        "decisions_24h": len(earlier),
        "pending_approvals": sum(1 for d in earlier if d["outcome"] == "awaiting_approval"),
    }
    return {k: v for k, v in context.items() if v is not None}


async def _notify(kernel: Any, actor: Actor, trigger: Trigger, decision: Decision) -> dict[str, Any]:
    return await notify(kernel, AGENT, settings_of(kernel, AGENT), trigger, decision, subject=f"[Financeiro] {trigger.kind}")


async def _open_incident(kernel: Any, actor: Actor, trigger: Trigger, decision: Decision) -> dict[str, Any]:
    sent = await notify(kernel, AGENT, settings_of(kernel, AGENT), trigger, decision, subject=f"[Financeiro] Incidente: {trigger.kind}")
    return {"incident": True, **sent}


def _propose_pause(kernel: Any, trigger: Trigger, decision: Decision) -> ActionRequest:
    settings: FinanceSettings = settings_of(kernel, AGENT)  # type: ignore[assignment]
    return ActionRequest(
        action=PAUSE_ACTION,
        permission=PAUSE_PERMISSION,
        summary=f"Pausar os lembretes de cobrança por {settings.pause_hours} h: {decision.rationale}",
        payload={"hours": settings.pause_hours, "reason": f"finance agent: {decision.rationale}"[:200]},
        destructive=False,
    )


async def _check(kernel: Any) -> dict[str, int]:
    return {"triggers": len(await check_once(kernel))}


AGENT = Agent(
    name=NAME,
    department=DEPARTMENT,
    decision=FinanceDecision,
    rules=rules,  # type: ignore[arg-type]
    gather=gather,
    actions={
        "notify": ActionSpec("notify", execute=_notify),
        "open_incident": ActionSpec("open_incident", execute=_open_incident),
        "pause_dunning": ActionSpec("pause_dunning", propose=_propose_pause),
    },
    instructions=INSTRUCTIONS,
    prompt_version="2",
    # What the model reads for each trigger (all nine figures made finance's prompt the longest: p95 over 1.5 s).
    prompt_context={
        "payment_failures": ("payments_failed_24h", "payments_succeeded_24h", "pending_approvals"),
        "revenue": ("revenue_7d_cents", "revenue_prev_7d_cents", "mrr_cents", "pending_approvals"),
        "refund": ("refunds_24h", "refunds_cents_24h", "pending_approvals"),
    },
    periodic=(Periodic("check", _check, "check_interval", "Check payment failures and revenue against the week before."),),
    description="Payment failures over 24 hours, revenue drops week over week, refunds; dunning pauses through approvals.",
)


def _payment_trigger(runner: Any, settings: FinanceSettings, failed: int, succeeded: int, now: float, source: str) -> Trigger | None:
    """Queue one ``payment_failures`` trigger per window and level once the rate crosses a threshold."""
    if failed + succeeded < settings.min_payments:
        return None
    rate = failure_percent(failed, succeeded)
    level = "pause" if rate >= settings.pause_dunning_rate else "alert" if rate > settings.failure_rate else None
    if level is None or not runner.windows.fire_once(("payment_failures", level), now, settings.failure_window):
        return None
    trigger = Trigger(
        "payment_failures",
        "platform",
        {"failed": failed, "succeeded": succeeded, "rate": round(rate, 2), "window_s": settings.failure_window, "from": source},
    )
    runner.submit(trigger)
    return trigger


def observe(kernel: Any, envelope: Envelope, *, now: float | None = None) -> list[Trigger]:
    """Update the windows with one billing event; queue (and return) the triggers it crosses. Never waits for a decision."""
    runner = runner_of(kernel, AGENT)
    if runner is None or runner.stopping:
        return []
    settings: FinanceSettings = settings_of(kernel, AGENT)  # type: ignore[assignment]
    now = time.monotonic() if now is None else now
    windows = runner.windows
    window = settings.failure_window
    payload = envelope.payload
    fired: list[Trigger] = []
    if envelope.type in (FAILED, SUCCEEDED):
        windows.hit(("payments", envelope.type), now, window)
        if envelope.type == FAILED:
            failed, succeeded = windows.count(("payments", FAILED), now, window), windows.count(("payments", SUCCEEDED), now, window)
            found = _payment_trigger(runner, settings, failed, succeeded, now, "events")
            fired += [found] if found else []
    elif envelope.type == REFUNDED:
        refunds = windows.hit(("refunds",), now, DAY)
        amount = int((payload.get("amount") or {}).get("amount_minor", 0))
        tenant = str(payload.get("tenant_id") or envelope.tenant_id or "")
        data = {"amount_cents": amount, "refunds_24h": refunds, "full": bool(payload.get("full"))}
        if refunds >= settings.refund_spike and windows.fire_once(("refund_spike",), now, DAY):
            fired.append(Trigger("refund", "platform", data))
        elif amount >= settings.large_refund_cents:
            fired.append(Trigger("refund", f"charge:{payload.get('charge_id')}", data, tenant_id=tenant or None))
        for trigger in fired:
            runner.submit(trigger)
    return fired


async def check_once(kernel: Any, *, now: datetime | None = None) -> list[Trigger]:
    """Read the business figures (as the department's principal) and queue the triggers they cross."""
    runner = runner_of(kernel, AGENT)
    if runner is None or runner.stopping:
        return []
    settings: FinanceSettings = settings_of(kernel, AGENT)  # type: ignore[assignment]
    actor = await kernel.service_actor(NAME)
    if not actor.can(f"{DEPARTMENT}:read"):
        return []
    now = now or datetime.now(UTC)
    with acting_as(actor):
        day = await figures(kernel, now - timedelta(seconds=settings.failure_window), now)
        week = await figures(kernel, now - timedelta(days=7), now)
        before = await figures(kernel, now - timedelta(days=14), now - timedelta(days=7))
    fired: list[Trigger] = []
    clock = time.monotonic()
    found = _payment_trigger(runner, settings, day.get("payments_failed", 0), day.get("payments_succeeded", 0), clock, "figures")
    fired += [found] if found else []
    if "revenue_cents" in week and "revenue_cents" in before:
        revenue, previous = week["revenue_cents"], before["revenue_cents"]
        drop = drop_percent(revenue, previous)
        if previous >= settings.min_revenue_cents and drop > settings.revenue_drop:
            level = "incident" if drop >= settings.revenue_incident_drop else "alert"
            if runner.windows.fire_once(("revenue", level), clock, DAY):
                trigger = Trigger("revenue", "platform", {"revenue_cents": revenue, "previous_cents": previous, "drop": round(drop, 2)})
                runner.submit(trigger)
                fired.append(trigger)
    return fired
