"""Built-in staff commands: ``/whoami``, ``/help``, ``/health``, ``/plugins``, ``/config``."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, Field

from botcriptofy import CommandContext, CommandReply, ProblemError, StaffCommand


def _t(context: CommandContext, pt: str, en: str) -> str:
    return pt if context.locale == "pt-BR" else en


async def whoami(context: CommandContext) -> CommandReply:
    actor = context.actor
    principal = actor.attributes.get("principal") or {}
    roles = principal.get("roles") or {}
    lines = [
        f"{principal.get('name') or actor.id} ({actor.kind} {actor.id})",
        _t(context, "Papéis: ", "Roles: ") + (", ".join(f"{d}={r}" for d, r in sorted(roles.items())) or "-"),
    ]
    if actor.super_admin:
        lines.append("super-admin")
    return CommandReply("\n".join(lines), data={"id": actor.id, "roles": dict(roles), "super_admin": actor.super_admin})


async def help_(context: CommandContext) -> CommandReply:
    commands = await context.kernel.staff_commands()
    allowed = [c for c in commands.values() if c.permission is None or context.actor.can(c.permission)]
    lines = [f"{c.usage()} — {c.describe(context.locale)}" for c in sorted(allowed, key=lambda c: c.name)]
    return CommandReply("\n".join(lines), data={"commands": [c.name for c in allowed]})


async def health(context: CommandContext) -> CommandReply:
    kernel = context.kernel
    results: dict[str, str] = {}
    for plugin, checks in (await kernel.broadcast("health_checks", kernel=kernel)).items():
        for check in checks or ():
            try:
                outcome = check.check()
                if asyncio.iscoroutine(outcome):
                    outcome = await asyncio.wait_for(outcome, check.timeout)
                results[f"{plugin}.{check.name}"] = "ok" if outcome is None or outcome else "fail"
            except Exception as error:
                results[f"{plugin}.{check.name}"] = f"fail ({type(error).__name__})"
    healthy = all(v == "ok" for v in results.values())
    head = ("✅ " if healthy else "❌ ") + _t(context, "geração", "generation") + f" {kernel.generation}"
    lines = [head, *(f"{name}: {value}" for name, value in sorted(results.items()))]
    return CommandReply("\n".join(lines), data={"healthy": healthy, "checks": results})


async def plugins(context: CommandContext) -> CommandReply:
    kernel = context.kernel
    rows = []
    for name, info in sorted(kernel.runtime.plugins.items()):
        state = "on" if name in kernel.plugins else ("refused" if info.error else "off")
        rows.append(f"{name} {info.version} {state}")
    return CommandReply("\n".join(rows), data={"plugins": sorted(kernel.plugins)})


class ConfigArguments(BaseModel):
    action: Literal["history", "rollback"] = Field("history", description="history (default) or rollback.")
    version: int | None = Field(None, ge=1, description="The version to roll back to.")


async def config(context: CommandContext) -> CommandReply:
    kernel = context.kernel
    arguments = context.arguments
    assert isinstance(arguments, ConfigArguments)
    if arguments.action == "rollback":
        if arguments.version is None:
            raise ProblemError(
                422,
                "Invalid arguments",
                "Name the version: /config rollback <version>.",
                errors=[{"field": "version", "message": "required for rollback", "in": "arguments"}],
            )
        request = await kernel.request_approval(
            action="config.rollback",
            summary=f"Roll the configuration back to version {arguments.version}",
            department="configuration",
            permission="configuration:manage",
            requester=context.actor,
            expires_in=3600,
            payload={"version": arguments.version},
            destructive=True,
        )
        return CommandReply(
            _t(context, f"Pedido de aprovação {request.id} criado.", f"Approval request {request.id} created."),
            data={"approval_id": request.id},
        )
    history = kernel.runtime.history
    versions = await asyncio.to_thread(history.versions, 10) if history is not None else []
    lines = [f"v{v.version} {v.applied_at} {v.source} {v.note}".rstrip() for v in versions]
    current = _t(context, "em uso", "in use")
    return CommandReply("\n".join([f"{current}: v{kernel.config_version}", *lines]), data={"versions": [v.version for v in versions]})


COMMANDS = [
    StaffCommand("whoami", {"pt-BR": "Quem sou eu e meus papéis", "en": "Who I am and my roles"}, whoami),
    StaffCommand("help", {"pt-BR": "Comandos que posso usar", "en": "Commands I may run"}, help_),
    StaffCommand("health", {"pt-BR": "Saúde do serviço", "en": "Service health"}, health, permission="configuration:read"),
    StaffCommand("plugins", {"pt-BR": "Plugins e versões", "en": "Plugins and versions"}, plugins, permission="configuration:read"),
    StaffCommand(
        "config",
        {"pt-BR": "Histórico da configuração; reversão com aprovação", "en": "Configuration history; rollback through an approval"},
        config,
        permission="configuration:read",
        arguments=ConfigArguments,
    ),
]
