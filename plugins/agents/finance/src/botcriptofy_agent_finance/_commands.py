"""``/revenue`` and ``/paymentstats``: the finance department's figures and the agent's recent decisions.

``/payments`` already belongs to the billing plugin (one tenant's invoices); the platform-wide view
of payments this agent watches is ``/paymentstats``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from botcriptofy import CommandContext, CommandReply, StaffCommand
from botcriptofy_agents import read_decisions, runner_of

from ._agent import AGENT, DEPARTMENT, FAILED, SUCCEEDED, drop_percent, failure_percent, figures


class RevenueArguments(BaseModel):
    days: int = Field(7, ge=1, le=90, description="Days of the period compared with the same number of days before it.")


def _money(cents: int) -> str:
    return f"R$ {cents / 100:,.2f}"


async def revenue(context: CommandContext) -> CommandReply:
    days = context.arguments.days if isinstance(context.arguments, RevenueArguments) else 7
    english = context.locale == "en"
    now = datetime.now(UTC)
    current = await figures(context.kernel, now - timedelta(days=days), now)
    before = await figures(context.kernel, now - timedelta(days=2 * days), now - timedelta(days=days))
    if "revenue_cents" not in current:
        text = "No plugin reports revenue (is billing enabled?)." if english else "Nenhum plugin informa a receita (o billing está ativo?)."
        return CommandReply(text, data={"available": False})
    got, previous = current["revenue_cents"], before.get("revenue_cents", 0)
    change = -drop_percent(got, previous) if previous else None
    trend = "-" if change is None else f"{change:+.1f} %"
    lines = [
        (f"Revenue, last {days} days: {_money(got)} ({trend} against the {days} before)")
        if english
        else f"Receita, últimos {days} dias: {_money(got)} ({trend} sobre os {days} anteriores)",
        f"MRR: {_money(current.get('mrr_cents', 0))}",
        (f"Refunds: {current.get('refunds', 0)} ({_money(current.get('refunds_cents', 0))})")
        if english
        else f"Reembolsos: {current.get('refunds', 0)} ({_money(current.get('refunds_cents', 0))})",
    ]
    rows = await read_decisions(context.kernel, context.actor, department=DEPARTMENT, limit=5)
    lines += [f"• {r['created_at']:%Y-%m-%d %H:%M} {r['trigger_kind']} → {r['action']} ({r['outcome']}, {r['source']})" for r in rows]
    data = {
        "days": days,
        "revenue_cents": got,
        "previous_cents": previous,
        "change_percent": None if change is None else round(change, 2),
        "mrr_cents": current.get("mrr_cents", 0),
        "refunds": current.get("refunds", 0),
        "refunds_cents": current.get("refunds_cents", 0),
    }
    return CommandReply("\n".join(lines), data=data)


async def paymentstats(context: CommandContext) -> CommandReply:
    english = context.locale == "en"
    now = datetime.now(UTC)
    day = await figures(context.kernel, now - timedelta(days=1), now)
    failed, succeeded = day.get("payments_failed", 0), day.get("payments_succeeded", 0)
    runner = runner_of(context.kernel, AGENT)
    seen = (0, 0)
    if runner is not None:
        clock, window = time.monotonic(), 86400.0
        seen = (runner.windows.count(("payments", FAILED), clock, window), runner.windows.count(("payments", SUCCEEDED), clock, window))
    rate = failure_percent(failed, succeeded)
    lines = [
        (f"Payments, 24 h: {succeeded} succeeded, {failed} failed ({rate:.1f} % failed)")
        if english
        else f"Pagamentos, 24 h: {succeeded} aprovados, {failed} recusados ({rate:.1f} % recusados)",
        (f"Seen by the agent since it started (24 h): {seen[1]} succeeded, {seen[0]} failed")
        if english
        else f"Vistos pelo agente desde que iniciou (24 h): {seen[1]} aprovados, {seen[0]} recusados",
    ]
    rows = await read_decisions(context.kernel, context.actor, department=DEPARTMENT, limit=200)
    pauses = [r for r in rows if r["action"] == "pause_dunning"][:5]
    for row in pauses:
        lines.append(f"• {row['created_at']:%Y-%m-%d %H:%M} pause_dunning — {row['outcome']} approval {row['approval_id'] or '-'}")
    data = {
        "payments_succeeded_24h": succeeded,
        "payments_failed_24h": failed,
        "failure_percent": round(rate, 2),
        "seen_failed": seen[0],
        "seen_succeeded": seen[1],
        "dunning_pauses": [{"id": r["id"], "outcome": r["outcome"], "approval_id": r["approval_id"]} for r in pauses],
    }
    return CommandReply("\n".join(lines), data=data)


COMMANDS = (
    StaffCommand(
        "revenue",
        {"pt-BR": "Receita do período contra o anterior, MRR e reembolsos", "en": "Revenue against the period before, MRR and refunds"},
        revenue,
        permission="finance:read",
        arguments=RevenueArguments,
    ),
    StaffCommand(
        "paymentstats",
        {"pt-BR": "Pagamentos aprovados e recusados em 24 h", "en": "Payments succeeded and failed over 24 hours"},
        paymentstats,
        permission="finance:read",
    ),
)
