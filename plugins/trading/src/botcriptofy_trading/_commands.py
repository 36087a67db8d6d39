"""Staff commands: ``/bots`` (counts by status, or one tenant's bots) and ``/bot <id> stop|pause|show``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from botcriptofy import CommandContext, CommandReply, ProblemError, StaffCommand

from . import _bots

READ = "botops:read"
OPERATE = "botops:operate"


class BotsArguments(BaseModel):
    tenant: str | None = Field(None, max_length=64, description="A tenant id: list its bots.")


class BotArguments(BaseModel):
    bot_id: str = Field(min_length=1, max_length=36)
    action: Literal["stop", "pause", "show"] = "show"


async def bots_command(context: CommandContext) -> CommandReply:
    arguments = context.arguments
    assert isinstance(arguments, BotsArguments)
    by_status, listed = await _bots.counts(context.kernel, arguments.tenant)
    total = sum(by_status.values())
    summary = ", ".join(f"{status} {count}" for status, count in sorted(by_status.items())) or "none"
    lines = [f"{'Tenant ' + arguments.tenant + ': ' if arguments.tenant else ''}{total} bot(s): {summary}"]
    lines += [f"{row.id} {row.name} {row.symbol} {row.strategy} — {row.status}" for row in listed]
    data = {"counts": by_status, "bots": [{"id": r.id, "name": r.name, "status": r.status, "symbol": r.symbol} for r in listed]}
    return CommandReply("\n".join(lines), data=data)


async def bot_command(context: CommandContext) -> CommandReply:
    """Show a bot; stopping or pausing it needs ``botops:operate`` and is audited (``trading.bot_stop``/``_pause``), a refusal too."""
    arguments = context.arguments
    assert isinstance(arguments, BotArguments)
    kernel = context.kernel
    tenant = await _bots.tenant_of(kernel, arguments.bot_id)
    if tenant is None:
        return CommandReply(f"No bot {arguments.bot_id}.", data={"found": False})
    if arguments.action == "show":
        shown = _bots.view(await _bots.get_row(kernel, tenant, arguments.bot_id))
    else:
        action, target = f"trading.bot_{arguments.action}", f"bot:{arguments.bot_id}"
        details = {"channel": context.channel, "bot_tenant_id": tenant}
        if not context.actor.can(OPERATE):
            await kernel.audit(action, actor=context.actor, target=target, outcome="denied", details=details)
            raise ProblemError(403, "Forbidden", f"Stopping or pausing a bot needs the permission '{OPERATE}'.")
        status = "stopped" if arguments.action == "stop" else "paused"
        shown = await _bots.halt_bot(kernel, tenant, arguments.bot_id, status, reason="staff")
        await kernel.audit(action, actor=context.actor, target=target, details={**details, "status": shown["status"]})
    text = f"Bot {shown['id']} {shown['name']} ({shown['symbol']}, tenant {tenant}): {shown['status']}"
    return CommandReply(text, data={"found": True, "tenant_id": tenant, "status": shown["status"]})


COMMANDS = [
    StaffCommand(
        "bots",
        {"pt-BR": "Robôs por status, ou os robôs de um tenant", "en": "Bots by status, or one tenant's bots"},
        bots_command,
        permission=READ,
        arguments=BotsArguments,
    ),
    StaffCommand(
        "bot",
        {"pt-BR": "Ver, parar ou pausar um robô", "en": "Show, stop or pause a bot"},
        bot_command,
        permission=READ,
        arguments=BotArguments,
    ),
]
