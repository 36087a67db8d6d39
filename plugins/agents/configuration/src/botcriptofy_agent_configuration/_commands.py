"""``/configwatch`` and ``/resources``: the agent's view of the configuration and the machine.

``/config`` and ``/health`` stay the notifications plugin's built-in commands (history and rollback,
readiness); these two add what the agent watches, under names of their own.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from botcriptofy import CommandContext, CommandReply, StaffCommand
from botcriptofy_agents import read_decisions

from ._agent import DEPARTMENT, watch_of


class WatchArguments(BaseModel):
    limit: int = Field(10, ge=1, le=50, description="How many decisions to list.")


async def configwatch(context: CommandContext) -> CommandReply:
    limit = context.arguments.limit if isinstance(context.arguments, WatchArguments) else 10
    kernel = context.kernel
    watch = watch_of(kernel)
    rows = await read_decisions(kernel, context.actor, department=DEPARTMENT, limit=limit)
    english = context.locale == "en"
    head = (
        f"Configuration version {kernel.config_version} (previous {watch.previous_version or '-'})"
        if english
        else f"Configuração versão {kernel.config_version} (anterior {watch.previous_version or '-'})"
    )
    lines = [head]
    if watch.refused_seen:
        lines.append(("Last refused change: " if english else "Última mudança recusada: ") + watch.refused_seen[:200])
    for row in rows:
        approval = f" approval {row['approval_id']}" if row["approval_id"] else ""
        lines.append(
            f"• {row['created_at']:%Y-%m-%d %H:%M} {row['trigger_kind']} → {row['action']} ({row['outcome']}{approval}, {row['source']})"
        )
    data = {
        "config_version": kernel.config_version,
        "previous_version": watch.previous_version,
        "refused": watch.refused_seen,
        "decisions": [{"id": r["id"], "trigger": r["trigger_kind"], "action": r["action"], "outcome": r["outcome"]} for r in rows],
    }
    return CommandReply("\n".join(lines), data=data)


async def resources(context: CommandContext) -> CommandReply:
    watch = watch_of(context.kernel)
    last = watch.last
    english = context.locale == "en"

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} %"

    above = "samples above threshold" if english else "amostras acima do limite"
    lines = [
        f"CPU {pct(last.cpu)} ({len(watch.cpu)} {above})",
        f"{'Memory' if english else 'Memória'} {pct(last.memory)} ({len(watch.memory)} {above})",
        (f"Failing checks: {', '.join(last.failing)}" if english else f"Verificações falhando: {', '.join(last.failing)}")
        if last.failing
        else ("Readiness: ok" if english else "Prontidão: ok"),
    ]
    data = {
        "cpu": last.cpu,
        "memory": last.memory,
        "failing": list(last.failing),
        "cpu_streak": len(watch.cpu),
        "memory_streak": len(watch.memory),
    }
    return CommandReply("\n".join(lines), data=data)


COMMANDS = (
    StaffCommand(
        "configwatch",
        {"pt-BR": "Mudanças de configuração vistas pelo agente", "en": "Configuration changes as the agent sees them"},
        configwatch,
        permission="configuration:read",
        arguments=WatchArguments,
    ),
    StaffCommand(
        "resources",
        {"pt-BR": "CPU, memória e prontidão amostradas", "en": "Sampled CPU, memory and readiness"},
        resources,
        permission="configuration:read",
    ),
)
