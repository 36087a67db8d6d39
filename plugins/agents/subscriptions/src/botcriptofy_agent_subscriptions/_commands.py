"""``/usage`` and ``/churn``: quota pressure across tenants, churn and trials.

Billing's ``/subscription`` shows one tenant's plan; these two are the department's platform-wide
views, from the agent's decisions (quota triggers) and the kernel's ``business_metrics``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from botcriptofy import CommandContext, CommandReply, StaffCommand
from botcriptofy_agents import read_decisions

from ._agent import DEPARTMENT, churn_percent, figures


class UsageArguments(BaseModel):
    days: int = Field(31, ge=1, le=90, description="Days of quota events to count.")


class ChurnArguments(BaseModel):
    days: int = Field(30, ge=1, le=365, description="Days of the churn window.")


async def usage(context: CommandContext) -> CommandReply:
    days = context.arguments.days if isinstance(context.arguments, UsageArguments) else 31
    english = context.locale == "en"
    since = datetime.now(UTC) - timedelta(days=days)
    rows = await read_decisions(context.kernel, context.actor, department=DEPARTMENT, since=since, limit=1000)
    by_quota: dict[str, dict[str, set[str]]] = {}
    for row in rows:
        if row["trigger_kind"] != "quota":
            continue
        data = row["trigger"]["data"]
        used, limit = int(data.get("used", 0)), int(data.get("limit", 0))
        level = "100" if limit and used >= limit else "80"
        by_quota.setdefault(str(data.get("quota")), {"80": set(), "100": set()})[level].add(str(row["subject_tenant"]))
    if not by_quota:
        text = (
            f"No tenant reached 80 % of a quota in {days} days." if english else f"Nenhum tenant chegou a 80 % de uma cota em {days} dias."
        )
        return CommandReply(text, data={"quotas": {}})
    head = f"Quotas, last {days} days (tenants):" if english else f"Cotas, últimos {days} dias (tenants):"
    lines = [head]
    summary = {}
    for quota, levels in sorted(by_quota.items()):
        at_80, at_100 = len(levels["80"] - levels["100"]), len(levels["100"])
        summary[quota] = {"at_80": at_80, "at_100": at_100}
        lines.append(f"• {quota}: {at_80} ≥ 80 %, {at_100} = 100 %")
    return CommandReply("\n".join(lines), data={"quotas": summary})


async def churn(context: CommandContext) -> CommandReply:
    days = context.arguments.days if isinstance(context.arguments, ChurnArguments) else 30
    english = context.locale == "en"
    now = datetime.now(UTC)
    month = await figures(context.kernel, now - timedelta(days=days), now)
    if "subscriptions_canceled" not in month:
        text = (
            "No plugin reports subscriptions (is billing enabled?)."
            if english
            else "Nenhum plugin informa assinaturas (o billing está ativo?)."
        )
        return CommandReply(text, data={"available": False})
    canceled, active, past_due = (
        month["subscriptions_canceled"],
        month.get("subscriptions_active", 0),
        month.get("subscriptions_past_due", 0),
    )
    rate = churn_percent(canceled, active, past_due)
    trialing, ending = month.get("subscriptions_trialing", 0), month.get("trials_ending_3d", 0)
    started, converted = month.get("trials_started", 0), month.get("trials_converted", 0)
    lines = (
        [
            f"Churn, last {days} days: {rate:.1f} % ({canceled} canceled; {active} active, {past_due} past due)",
            f"Trials: {trialing} running, {ending} ending within 3 days; {started} started, {converted} converted",
        ]
        if english
        else [
            f"Churn, últimos {days} dias: {rate:.1f} % ({canceled} canceladas; {active} ativas, {past_due} em atraso)",
            f"Testes: {trialing} em andamento, {ending} terminam em até 3 dias; {started} iniciados, {converted} convertidos",
        ]
    )
    data = {
        "days": days,
        "churn_percent": round(rate, 2),
        "canceled": canceled,
        "active": active,
        "past_due": past_due,
        "trialing": trialing,
        "trials_ending_3d": ending,
        "trials_started": started,
        "trials_converted": converted,
    }
    return CommandReply("\n".join(lines), data=data)


COMMANDS = (
    StaffCommand(
        "usage",
        {"pt-BR": "Tenants que chegaram a 80 % ou 100 % de uma cota", "en": "Tenants that reached 80 % or 100 % of a quota"},
        usage,
        permission="subscriptions:read",
        arguments=UsageArguments,
    ),
    StaffCommand(
        "churn",
        {"pt-BR": "Churn, assinaturas ativas, em atraso e testes", "en": "Churn, active and past-due subscriptions, trials"},
        churn,
        permission="subscriptions:read",
        arguments=ChurnArguments,
    ),
)
