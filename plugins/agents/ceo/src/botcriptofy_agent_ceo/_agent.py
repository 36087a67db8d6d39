"""The CEO agent: a daily executive summary from the business KPIs and the other agents' decisions, and alerts."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botcriptofy import Actor, ApprovalRequest, Notification, ProblemError, StashKey
from botcriptofy_agents import (
    ActionRequest,
    ActionSpec,
    Agent,
    Decision,
    Periodic,
    Trigger,
    decision_model,
    notify,
    notify_address,
    read_decisions,
    registered_agents,
    runner_of,
    settings_of,
)

from ._settings import ACTIONS, CeoSettings

NAME = "agent_ceo"
DEPARTMENT = "ceo"
DISTRIBUTE = "agent_ceo.distribute_report"
CeoDecision = decision_model("CeoDecision", ACTIONS)

INSTRUCTIONS = (
    "You brief the company's CEO: a daily executive summary of the business figures and of what the department agents decided, "
    "and alerts when failed payments or churn cross their thresholds or another agent takes critical decisions."
)
DAY, MONTH = timedelta(days=1), timedelta(days=30)


@dataclass
class Watch:
    """What the agent remembers (per process): when it last looked at the decisions, the summaries waiting for their action."""

    last_look: datetime | None = None
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_summary: dict[str, Any] | None = None


WATCH: StashKey[Watch] = StashKey("botcriptofy_agent_ceo.watch")


def watch_of(kernel: Any) -> Watch:
    return kernel.stash.setdefault(WATCH, Watch())  # type: ignore[no-any-return]


def _decision(action: str, severity: str, confidence: float, rationale: str, **parameters: str) -> Decision:
    return CeoDecision(action=action, severity=severity, confidence=confidence, rationale=rationale[:80], parameters=parameters)


def rules(trigger: Trigger, context: Mapping[str, Any], settings: CeoSettings) -> Decision:
    """The deterministic decision (SPEC §7 thresholds); the fallback whenever the model fails."""
    data = trigger.data
    kind = trigger.kind
    if kind == "daily_summary":
        severity = "warning" if int(context.get("alerts", 0)) > 0 else "info"
        if context.get("board"):
            return _decision("distribute_report", severity, 0.9, "Daily summary ready; distribute it to the board.")
        return _decision("send_summary", severity, 0.95, "Daily executive summary.")
    if kind == "kpi":
        rate = float(data.get("rate", 0.0))
        volume = int(data.get("volume", 0))
        if data.get("kpi") == "payments_failed_rate":
            threshold, minimum, label = settings.failed_payment_rate, settings.min_payments, "failed payments"
        elif data.get("kpi") == "churn_rate":
            threshold, minimum, label = settings.churn_rate, settings.min_subscriptions, "churn"
        else:
            return _decision("none", "info", 0.5, f"No threshold for '{data.get('kpi')}'.")
        if volume < minimum or rate <= threshold:
            return _decision("none", "info", 0.85, f"{label} within the threshold.")
        severity = "critical" if rate >= 2 * threshold else "high"
        return _decision("alert", severity, 0.85, f"{label} at {rate:.1%}, above {threshold:.0%}.")
    if kind == "critical_decisions":
        critical, high = int(data.get("critical", 0)), int(data.get("high", 0))
        if critical >= 1:
            return _decision("alert", "critical", 0.9, f"{critical} critical decisions by the department agents.")
        if high >= settings.high_decisions:
            return _decision("alert", "high", 0.8, f"{high} high-severity decisions by the department agents.")
        return _decision("none", "info", 0.85, "The department agents' decisions need no attention.")
    return _decision("none", "info", 0.5, f"No rule for '{kind}'.")


# -- reading: the business figures (the business_metrics hook) and the agents' decisions ----------


async def business_figures(kernel: Any, since: datetime, until: datetime) -> dict[str, int]:
    """Every plugin's ``business_metrics`` for ``[since, until)``, merged (a figure two plugins report is added up)."""
    merged: dict[str, int] = {}
    for figures in (await kernel.broadcast("business_metrics", kernel=kernel, since=since, until=until)).values():
        for name, value in (figures or {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                merged[name] = merged.get(name, 0) + value
    return merged


def _share(part: int | None, whole: int) -> float | None:
    return round(part / whole, 4) if part is not None and whole > 0 else None


def indicators(day: Mapping[str, int], month: Mapping[str, int]) -> dict[str, Any]:
    """The KPIs the figures allow: ``None`` where no plugin reports what a KPI needs."""
    succeeded, failed = day.get("payments_succeeded"), day.get("payments_failed")
    attempts = (succeeded or 0) + (failed or 0)
    active, canceled = month.get("subscriptions_active"), month.get("subscriptions_canceled")
    base = (active or 0) + (canceled or 0)
    started, converted = month.get("trials_started"), month.get("trials_converted")
    return {
        "mrr_cents": month.get("mrr_cents"),
        "signups_24h": day.get("signups"),
        "revenue_cents_24h": day.get("revenue_cents"),
        "payments_attempts_24h": attempts if succeeded is not None or failed is not None else None,
        "payments_failed_24h": failed,
        "payments_failed_rate": _share(failed, attempts),
        "trials_started_30d": started,
        "trials_converted_30d": converted,
        "trial_conversion_30d": _share(converted, started or 0),
        "subscriptions_active": active,
        "subscriptions_past_due": month.get("subscriptions_past_due"),
        "subscriptions_canceled_30d": canceled,
        "subscriptions_base_30d": base if active is not None or canceled is not None else None,
        "churn_rate_30d": _share(canceled, base),
    }


async def kpis(kernel: Any, until: datetime | None = None) -> dict[str, Any]:
    until = until or datetime.now(UTC)
    return indicators(await business_figures(kernel, until - DAY, until), await business_figures(kernel, until - MONTH, until))


async def decisions_overview(kernel: Any, actor: Actor, since: datetime) -> dict[str, dict[str, int]]:
    """Per department with an agent (the CEO's own excepted): decisions since ``since`` by what matters to the CEO.

    Reads through ``read_decisions`` as ``actor`` (``agents:read``); a department ``actor`` may not read is left out.
    """
    overview: dict[str, dict[str, int]] = {}
    for department in sorted({a.department for a in registered_agents(kernel)} - {DEPARTMENT}):
        try:
            rows = await read_decisions(kernel, actor, department=department, since=since, limit=5000)
        except ProblemError:
            continue
        overview[department] = {
            "decisions": len(rows),
            "acted": sum(1 for r in rows if r["outcome"] in ("executed", "approved")),
            "awaiting_approval": sum(1 for r in rows if r["outcome"] == "awaiting_approval"),
            "critical": sum(1 for r in rows if r["decision"].get("severity") == "critical" and r["action"] != "none"),
            "high": sum(1 for r in rows if r["decision"].get("severity") == "high" and r["action"] != "none"),
            "fallbacks": sum(1 for r in rows if r["fallback_reason"]),
        }
    return overview


def _money(cents: int | None) -> str:
    if cents is None:
        return "-"
    return "R$ " + f"{cents / 100:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def summary_text(day: str, figures: Mapping[str, Any], overview: Mapping[str, Mapping[str, int]], english: bool = False) -> str:
    """The executive summary as the department reads it: figures and agents, no personal data."""
    f = figures
    if english:
        lines = [
            f"Executive summary {day}",
            f"MRR {_money(f['mrr_cents'])}; revenue 24 h {_money(f['revenue_cents_24h'])}",
            f"Sign-ups 24 h: {_n(f['signups_24h'])}",
            f"Payments 24 h: {_n(f['payments_attempts_24h'])} attempts, {_n(f['payments_failed_24h'])} failed "
            f"({_pct(f['payments_failed_rate'])})",
            f"Trials 30 d: {_n(f['trials_started_30d'])} started, {_n(f['trials_converted_30d'])} converted "
            f"({_pct(f['trial_conversion_30d'])})",
            f"Subscriptions: {_n(f['subscriptions_active'])} active, {_n(f['subscriptions_past_due'])} past due; "
            f"churn 30 d {_pct(f['churn_rate_30d'])}",
        ]
        head = "Agents, 24 h:"
        row = "{d}: {decisions} decisions, {acted} acted, {awaiting_approval} awaiting approval, {critical} critical, {fallbacks} fallbacks"
    else:
        lines = [
            f"Resumo executivo {day}",
            f"MRR {_money(f['mrr_cents'])}; receita 24 h {_money(f['revenue_cents_24h'])}",
            f"Cadastros 24 h: {_n(f['signups_24h'])}",
            f"Pagamentos 24 h: {_n(f['payments_attempts_24h'])} tentativas, {_n(f['payments_failed_24h'])} falhas "
            f"({_pct(f['payments_failed_rate'])})",
            f"Testes 30 d: {_n(f['trials_started_30d'])} iniciados, {_n(f['trials_converted_30d'])} convertidos "
            f"({_pct(f['trial_conversion_30d'])})",
            f"Assinaturas: {_n(f['subscriptions_active'])} ativas, {_n(f['subscriptions_past_due'])} em atraso; "
            f"churn 30 d {_pct(f['churn_rate_30d'])}",
        ]
        head = "Agentes, 24 h:"
        row = (
            "{d}: {decisions} decisões, {acted} ações, {awaiting_approval} aguardando aprovação, {critical} críticas, {fallbacks} fallbacks"
        )
    lines.append(head)
    lines.extend(f"• {row.format(d=d, **counts)}" for d, counts in overview.items())
    if not overview:
        lines.append("• -")
    return "\n".join(lines)


def alert_count(figures: Mapping[str, Any], overview: Mapping[str, Mapping[str, int]], settings: CeoSettings) -> int:
    """How many things in a summary cross a threshold: failed payments, churn, critical decisions."""
    count = 0
    if (figures.get("payments_attempts_24h") or 0) >= settings.min_payments and (figures.get("payments_failed_rate") or 0) > (
        settings.failed_payment_rate
    ):
        count += 1
    if (figures.get("subscriptions_base_30d") or 0) >= settings.min_subscriptions and (figures.get("churn_rate_30d") or 0) > (
        settings.churn_rate
    ):
        count += 1
    return count + sum(1 for counts in overview.values() if counts["critical"])


async def build_summary(
    kernel: Any, actor: Actor, *, until: datetime | None = None, day: str | None = None, english: bool = False
) -> dict[str, Any]:
    """The summary as of ``until`` (now): KPIs, the agents' decisions of 24 h, how many cross a threshold, the text; ``day`` labels it."""
    until = until or datetime.now(UTC)
    settings: CeoSettings = settings_of(kernel, AGENT)  # type: ignore[assignment]
    figures = await kpis(kernel, until)
    overview = await decisions_overview(kernel, actor, until - DAY)
    day = day or until.date().isoformat()
    return {
        "day": day,
        "kpis": figures,
        "agents": overview,
        "alerts": alert_count(figures, overview, settings),
        "text": summary_text(day, figures, overview, english),
    }


async def gather(kernel: Any, actor: Actor, trigger: Trigger) -> dict[str, Any]:
    """Read-only context: for the summary, the KPIs and the agents' decisions (counts only); else this agent's recent decisions."""
    settings: CeoSettings = settings_of(kernel, AGENT)  # type: ignore[assignment]
    earlier = await read_decisions(kernel, actor, department=DEPARTMENT, subject=trigger.subject, since=datetime.now(UTC) - DAY, limit=200)
    context: dict[str, Any] = {"decisions_24h": len(earlier)}
    if trigger.kind == "daily_summary":
        summary = await build_summary(kernel, actor, day=str(trigger.data.get("day") or "") or None)
        summaries = watch_of(kernel).summaries
        summaries[trigger.subject] = summary
        while len(summaries) > 8:  # summaries no action took (shadow mode, refused): keep the last few only
            summaries.pop(next(iter(summaries)))
        context.update(
            {"kpis": summary["kpis"], "agents": summary["agents"], "alerts": summary["alerts"], "board": bool(settings.board_recipient)}
        )
    return context


def _summary_for(kernel: Any, trigger: Trigger) -> dict[str, Any]:
    summary = watch_of(kernel).summaries.pop(trigger.subject, None)
    if summary is None:
        raise ValueError(f"no summary was gathered for {trigger.subject}")
    watch_of(kernel).last_summary = summary
    return summary


async def _send_summary(kernel: Any, actor: Actor, trigger: Trigger, decision: Decision) -> dict[str, Any]:
    summary = _summary_for(kernel, trigger)
    address = notify_address(AGENT, settings_of(kernel, AGENT))
    await kernel.notify(
        Notification(
            recipient=address,
            subject=f"[CEO] Resumo executivo {summary['day']}",
            body=summary["text"],
            severity="warning" if decision.severity == "warning" else "info",
            category="agents.ceo",
            data={"agent": NAME, "trigger": trigger.kind, "day": summary["day"], "alerts": summary["alerts"]},
            dedup_key=f"{NAME}:summary:{summary['day']}",
        )
    )
    return {"notified": address, "day": summary["day"]}


async def _alert(kernel: Any, actor: Actor, trigger: Trigger, decision: Decision) -> dict[str, Any]:
    return await notify(
        kernel, AGENT, settings_of(kernel, AGENT), trigger, decision, subject=f"[CEO] Alerta: {trigger.kind} ({trigger.subject})"
    )


def _propose_distribution(kernel: Any, trigger: Trigger, decision: Decision) -> ActionRequest:
    settings: CeoSettings = settings_of(kernel, AGENT)  # type: ignore[assignment]
    if not settings.board_recipient:
        raise ValueError("no board_recipient is configured to distribute the summary to")
    summary = _summary_for(kernel, trigger)
    return ActionRequest(
        action=DISTRIBUTE,
        permission="ceo:manage",
        summary=f"Distribuir o resumo executivo de {summary['day']} para {settings.board_recipient}",
        payload={
            "recipients": [settings.board_recipient, notify_address(AGENT, settings)],
            "subject": f"[CEO] Resumo executivo {summary['day']}",
            "body": summary["text"],
            "day": summary["day"],
        },
        destructive=False,
    )


async def distribute(kernel: Any, approval: ApprovalRequest) -> dict[str, Any]:
    """The approved distribution: the summary to the board and the department, once (keyed by the approval)."""
    payload = approval.payload
    recipients = [str(r) for r in payload.get("recipients", ())]
    for recipient in recipients:
        await kernel.notify(
            Notification(
                recipient=recipient,
                subject=str(payload.get("subject", "")),
                body=str(payload.get("body", "")),
                category="agents.ceo",
                data={"agent": NAME, "day": payload.get("day"), "approval_id": approval.id},
                dedup_key=f"{NAME}:distribute:{approval.id}:{recipient}",
            )
        )
    return {"done": True, "sent": recipients}


async def _look(kernel: Any) -> dict[str, int]:
    return {"triggers": len(await look(kernel))}


AGENT = Agent(
    name=NAME,
    department=DEPARTMENT,
    decision=CeoDecision,
    rules=rules,  # type: ignore[arg-type]
    gather=gather,
    actions={
        "send_summary": ActionSpec("send_summary", execute=_send_summary),
        "alert": ActionSpec("alert", execute=_alert),
        "distribute_report": ActionSpec("distribute_report", propose=_propose_distribution),
    },
    instructions=INSTRUCTIONS,
    prompt_version="1",
    periodic=(Periodic("look", _look, "watch_interval", "KPI thresholds and the agents' critical decisions."),),
    description="Daily executive summary from the business KPIs and the department agents' decisions; KPI and critical-decision alerts.",
)


# -- triggers: the summary's schedule, and the periodic look at KPIs and decisions ----------------


def summary_due(kernel: Any, now: datetime | None = None) -> Trigger | None:
    """Queue the day's executive summary (the 08:00 schedule's tick)."""
    runner = runner_of(kernel, AGENT)
    if runner is None or runner.stopping:
        return None
    day = (now or datetime.now(UTC)).date().isoformat()
    trigger = Trigger("daily_summary", f"summary:{day}", {"day": day})
    return trigger if runner.submit(trigger) else None


async def look(kernel: Any, *, now: datetime | None = None) -> list[Trigger]:
    """Look at the KPIs and at the agents' decisions since the last look; queue (and return) what crosses a threshold.

    A KPI fires once a day; decisions are counted once (since the previous look).
    """
    runner = runner_of(kernel, AGENT)
    if runner is None or runner.stopping:
        return []
    settings: CeoSettings = settings_of(kernel, AGENT)  # type: ignore[assignment]
    now = now or datetime.now(UTC)
    mono = time.monotonic()
    figures = await kpis(kernel, now)
    fired: list[Trigger] = []
    for name, rate, volume, threshold, minimum in (
        (
            "payments_failed_rate",
            figures["payments_failed_rate"],
            figures["payments_attempts_24h"],
            settings.failed_payment_rate,
            settings.min_payments,
        ),
        ("churn_rate", figures["churn_rate_30d"], figures["subscriptions_base_30d"], settings.churn_rate, settings.min_subscriptions),
    ):
        if rate is None or (volume or 0) < minimum or rate <= threshold:
            continue
        if runner.windows.fire_once(("kpi", name), mono, DAY.total_seconds()):
            fired.append(Trigger("kpi", name, {"kpi": name, "rate": rate, "volume": volume, "threshold": threshold}))
    watch = watch_of(kernel)
    since = watch.last_look or now - timedelta(seconds=settings.watch_interval)
    watch.last_look = now
    overview = await decisions_overview(kernel, await kernel.service_actor(NAME), since)
    critical = sum(c["critical"] for c in overview.values())
    high = sum(c["high"] for c in overview.values())
    if critical >= 1 or high >= settings.high_decisions:
        departments = sorted(d for d, c in overview.items() if c["critical"] or c["high"])
        fired.append(
            Trigger(
                "critical_decisions", f"decisions:{now:%Y-%m-%dT%H:%M}", {"critical": critical, "high": high, "departments": departments}
            )
        )
    for trigger in fired:
        runner.submit(trigger)
    return fired
