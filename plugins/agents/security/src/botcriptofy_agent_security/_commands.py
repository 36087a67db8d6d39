"""``/incidents``: the security department's open incidents and pending proposals, newest first."""

from __future__ import annotations

from pydantic import BaseModel, Field

from botcriptofy import CommandContext, CommandReply, StaffCommand
from botcriptofy_agents import read_decisions

from ._agent import DEPARTMENT


class IncidentsArguments(BaseModel):
    limit: int = Field(10, ge=1, le=50, description="How many to list.")


async def incidents(context: CommandContext) -> CommandReply:
    limit = context.arguments.limit if isinstance(context.arguments, IncidentsArguments) else 10
    rows = await read_decisions(context.kernel, context.actor, department=DEPARTMENT, limit=500)
    shown = [r for r in rows if r["action"] in ("open_incident", "lock_account", "revoke_sessions") and r["outcome"] != "no_action"][:limit]
    english = context.locale == "en"
    if not shown:
        return CommandReply("No incidents." if english else "Nenhum incidente.", data={"incidents": []})
    lines = [("Incidents (newest first):" if english else "Incidentes (mais recentes primeiro):")]
    for row in shown:
        stamp = row["created_at"].strftime("%Y-%m-%d %H:%M")
        approval = f" approval {row['approval_id']}" if row["approval_id"] else ""
        lines.append(f"• {stamp} {row['action']} {row['trigger_kind']} {row['subject']} — {row['outcome']}{approval} ({row['source']})")
    data = [
        {
            "id": r["id"],
            "action": r["action"],
            "trigger": r["trigger_kind"],
            "subject": r["subject"],
            "outcome": r["outcome"],
            "approval_id": r["approval_id"],
        }
        for r in shown
    ]
    return CommandReply("\n".join(lines), data={"incidents": data})


COMMANDS = (
    StaffCommand(
        "incidents",
        {"pt-BR": "Incidentes de segurança e propostas do agente", "en": "Security incidents and the agent's proposals"},
        incidents,
        permission="security:read",
        arguments=IncidentsArguments,
    ),
)
