"""``/report``, ``/kpis`` and ``/alerts``: the executive summary, the business figures and the alerts, on demand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from botcriptofy import CommandContext, CommandReply, ProblemError, StaffCommand
from botcriptofy_agents import read_decisions, registered_agents

from ._agent import DEPARTMENT, build_summary, business_figures, indicators


class KpiArguments(BaseModel):
    days: int = Field(1, ge=1, le=366, description="Days the window covers (ending now).")


class AlertArguments(BaseModel):
    limit: int = Field(10, ge=1, le=50, description="How many alerts to list.")


async def report(context: CommandContext) -> CommandReply:
    """The summary as of now, read with the caller's own permissions (a department they may not read is left out)."""
    summary = await build_summary(context.kernel, context.actor, english=context.locale == "en")
    return CommandReply(summary["text"], data={k: summary[k] for k in ("day", "kpis", "agents", "alerts")})


async def kpis_command(context: CommandContext) -> CommandReply:
    days = context.arguments.days if isinstance(context.arguments, KpiArguments) else 1
    until = datetime.now(UTC)
    figures = await business_figures(context.kernel, until - timedelta(days=days), until)
    derived = indicators(figures, figures)
    english = context.locale == "en"
    head = f"Business figures, last {days} day(s):" if english else f"Números do negócio, últimos {days} dia(s):"
    lines = [head, *(f"• {name}: {value}" for name, value in sorted(figures.items()))]
    if not figures:
        lines.append("• -" if english else "• - (nenhum plugin informa números)")
    for name in ("payments_failed_rate", "churn_rate_30d", "trial_conversion_30d"):
        if derived[name] is not None:
            lines.append(f"• {name.replace('_30d', '')}: {derived[name]:.1%}")
    return CommandReply(
        "\n".join(lines),
        data={
            "days": days,
            "figures": figures,
            "rates": {k: derived[k] for k in ("payments_failed_rate", "churn_rate_30d", "trial_conversion_30d")},
        },
    )


async def alerts(context: CommandContext) -> CommandReply:
    """The CEO agent's alerts, then the other agents' critical decisions of the last 24 hours the caller may read."""
    limit = context.arguments.limit if isinstance(context.arguments, AlertArguments) else 10
    kernel = context.kernel
    own = [r for r in await read_decisions(kernel, context.actor, department=DEPARTMENT, limit=500) if r["action"] == "alert"][:limit]
    since = datetime.now(UTC) - timedelta(days=1)
    critical = []
    for department in sorted({a.department for a in registered_agents(kernel)} - {DEPARTMENT}):
        try:
            rows = await read_decisions(kernel, context.actor, department=department, since=since, limit=1000)
        except ProblemError:
            continue
        critical += [r for r in rows if r["decision"].get("severity") == "critical" and r["action"] != "none"]
    critical = sorted(critical, key=lambda r: r["created_at"], reverse=True)[:limit]
    english = context.locale == "en"
    lines = ["CEO alerts:" if english else "Alertas do CEO:"]
    lines += [
        f"• {r['created_at']:%Y-%m-%d %H:%M} {r['trigger_kind']} {r['subject']}: {r['decision']['rationale']} ({r['outcome']})" for r in own
    ] or ["• -"]
    lines.append("Critical decisions, 24 h:" if english else "Decisões críticas, 24 h:")
    lines += [
        f"• {r['created_at']:%Y-%m-%d %H:%M} {r['department']} {r['action']} {r['trigger_kind']} ({r['outcome']})" for r in critical
    ] or ["• -"]

    def brief(r: dict[str, object]) -> dict[str, object]:
        return {k: r[k] for k in ("id", "agent", "department", "trigger_kind", "subject", "action", "outcome")}

    return CommandReply("\n".join(lines), data={"alerts": [brief(r) for r in own], "critical": [brief(r) for r in critical]})


COMMANDS = (
    StaffCommand(
        "report",
        {
            "pt-BR": "Resumo executivo agora: números e decisões dos agentes",
            "en": "Executive summary now: figures and the agents' decisions",
        },
        report,
        permission="ceo:read",
    ),
    StaffCommand(
        "kpis",
        {"pt-BR": "Números do negócio de uma janela", "en": "Business figures of a window"},
        kpis_command,
        permission="ceo:read",
        arguments=KpiArguments,
    ),
    StaffCommand(
        "alerts",
        {"pt-BR": "Alertas do CEO e decisões críticas dos agentes", "en": "CEO alerts and the agents' critical decisions"},
        alerts,
        permission="ceo:read",
        arguments=AlertArguments,
    ),
)
