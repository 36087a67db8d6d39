"""``/audit`` and ``/integrity``: the audit agent's findings, and a verification of the chains on demand."""

from __future__ import annotations

from pydantic import BaseModel, Field

from botcriptofy import CommandContext, CommandReply, StaffCommand
from botcriptofy_agents import read_decisions

from ._agent import DEPARTMENT, verify_chains, watch_of


class AuditArguments(BaseModel):
    limit: int = Field(10, ge=1, le=50, description="How many findings to list.")


class IntegrityArguments(BaseModel):
    chain: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="One chain ('platform' or a tenant id).")


def _verification_line(summary: dict[str, object] | None, english: bool) -> str:
    if summary is None:
        return "No verification yet." if english else "Nenhuma verificação ainda."
    if not summary.get("available"):
        return ("Verification unavailable: " if english else "Verificação indisponível: ") + str(summary.get("error"))
    if summary.get("valid"):
        return (
            f"Chains intact: {summary['entries']} entries in {summary['chains']} chains."
            if english
            else f"Cadeias íntegras: {summary['entries']} entradas em {summary['chains']} cadeias."
        )
    return ("Chain BROKEN at " if english else "Cadeia QUEBRADA em ") + str(summary.get("problem"))


async def audit(context: CommandContext) -> CommandReply:
    limit = context.arguments.limit if isinstance(context.arguments, AuditArguments) else 10
    rows = await read_decisions(context.kernel, context.actor, department=DEPARTMENT, limit=500)
    shown = [r for r in rows if r["action"] != "none"][:limit]
    watch = watch_of(context.kernel)
    english = context.locale == "en"
    lines = [_verification_line(watch.last_verification, english)]
    lines.append("Findings (newest first):" if english else "Achados (mais recentes primeiro):")
    if not shown:
        lines.append("-")
    for row in shown:
        approval = f" approval {row['approval_id']}" if row["approval_id"] else ""
        lines.append(
            f"• {row['created_at']:%Y-%m-%d %H:%M} {row['trigger_kind']} {row['subject']} → {row['action']}"
            f" ({row['outcome']}{approval}, {row['source']})"
        )
    data = {
        "verification": watch.last_verification,
        "findings": [
            {
                "id": r["id"],
                "trigger": r["trigger_kind"],
                "subject": r["subject"],
                "action": r["action"],
                "outcome": r["outcome"],
                "approval_id": r["approval_id"],
            }
            for r in shown
        ],
    }
    return CommandReply("\n".join(lines), data=data)


async def integrity(context: CommandContext) -> CommandReply:
    """Verify now, as the caller (the audit plugin checks ``audit:verify`` and records ``audit.verified`` under them)."""
    chain = context.arguments.chain if isinstance(context.arguments, IntegrityArguments) else None
    summary = await verify_chains(context.kernel, context.actor, chain)
    return CommandReply(_verification_line(summary, context.locale == "en"), data=summary)


COMMANDS = (
    StaffCommand(
        "audit",
        {"pt-BR": "Achados do agente de auditoria e a última verificação", "en": "The audit agent's findings and the last verification"},
        audit,
        permission="audit:read",
        arguments=AuditArguments,
    ),
    StaffCommand(
        "integrity",
        {"pt-BR": "Verificar agora a integridade das cadeias de auditoria", "en": "Verify the audit chains' integrity now"},
        integrity,
        permission="audit:verify",
        arguments=IntegrityArguments,
    ),
)
