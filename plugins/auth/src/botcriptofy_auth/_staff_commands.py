"""The ``/user`` staff command, the ``users:pii`` permission, and ``email:<address>`` recipients.

``/user <email>`` (permission ``users:read``) shows an account's status, roles, verification, creation
and last login. Personal data (e-mail, name, the last login's address) is shown in full only to callers
holding ``users:pii``; everyone else sees it masked (``a***@e***.com``). Every lookup is audited.

``email:<address>`` resolves to the active account with that address, so other plugins (billing's
``/payments``) find a person's tenant through ``kernel.resolve_recipients`` without reading auth's tables.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field, field_validator

from botcriptofy import CommandContext, CommandReply, Kernel, Permission, Recipient, StaffCommand

from . import _db
from ._models import Session, Tenant, User
from ._principals import load_principal
from ._recipients import _recipient
from ._util import normalise_email, now

PII = "users:pii"

PERMISSIONS = [
    Permission(
        PII,
        "See personal data unmasked in staff tools (e-mail, name, login addresses); without it /user masks them.",
        frozenset({"security:member", "support:member"}),
    ),
]


async def resolve_email(kernel: Kernel, address: str) -> list[Recipient]:
    """Return the active person whose e-mail is ``address`` (none for an unknown, malformed or disabled one)."""
    try:
        email = normalise_email(address)
    except ValueError:
        return []
    async with _db.system(kernel) as session:
        user_id = (await session.scalars(sa.select(User.id).where(User.email == email, User.kind == "user"))).first()
        principal = await load_principal(kernel, session, user_id) if user_id is not None else None
    if principal is None or principal["status"] != "active":
        return []
    return [_recipient(principal)]


def mask_email(email: str | None) -> str | None:
    """``ana.souza@example.com.br`` → ``a***@e***.br``: enough to tell two accounts apart, not to write to one."""
    if not email:
        return email
    local, _, domain = email.rpartition("@")
    labels = domain.split(".")
    return f"{local[:1]}***@{labels[0][:1]}***.{labels[-1]}"


def mask_name(name: str | None) -> str | None:
    if not name:
        return name
    return " ".join(f"{word[:1]}***" for word in name.split())


def mask_ip(address: str | None) -> str | None:
    """Keep the network, drop the host: ``203.0.113.7`` → ``203.0.113.x``; IPv6 keeps its first 48 bits."""
    if not address:
        return address
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return "***"
    if parsed.version == 4:
        return ".".join([*address.split(".")[:3], "x"])
    return ":".join(parsed.exploded.split(":")[:3]) + "::x"


class UserArguments(BaseModel):
    email: str = Field(min_length=3, max_length=320, description="The account's e-mail address.")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalise_email(value)


def _t(context: CommandContext, pt: str, en: str) -> str:
    return pt if context.locale == "pt-BR" else en


async def user(context: CommandContext) -> CommandReply:
    arguments = context.arguments
    assert isinstance(arguments, UserArguments)
    kernel = context.kernel
    async with _db.system(kernel) as session:
        row = (
            await session.execute(
                sa.select(User, Tenant).join(Tenant, Tenant.id == User.tenant_id).where(User.email == arguments.email, User.kind == "user")
            )
        ).first()
        last = principal = None
        if row is not None:
            last = (
                await session.execute(
                    sa.select(Session.created_at, Session.method, Session.ip)
                    .where(Session.user_id == row[0].id, Session.method != "service")
                    .order_by(Session.created_at.desc())
                    .limit(1)
                )
            ).first()
            principal = await load_principal(kernel, session, row[0].id)
    if row is None:
        await kernel.audit("auth.user_lookup", actor=context.actor, outcome="not_found", details={"channel": context.channel})
        return CommandReply(_t(context, "Nenhuma conta com esse e-mail.", "No account has that e-mail."), data={"found": False})
    account, tenant = row
    pii = context.actor.can(PII)
    roles = dict((principal or {}).get("roles") or {})
    locked = account.locked_until is not None and account.locked_until > now()
    shown_email = account.email if pii else mask_email(account.email)
    shown_name = account.name if pii else mask_name(account.name)
    last_ip = (last.ip if pii else mask_ip(last.ip)) if last is not None else None
    data: dict[str, Any] = {
        "found": True,
        "pii": pii,
        "id": account.id,
        "email": shown_email,
        "name": shown_name,
        "tenant_id": tenant.id,
        "tenant_type": tenant.type,
        "status": account.status,
        "locked": locked,
        "email_verified": bool(account.email_verified),
        "totp_enabled": bool(account.totp_enabled),
        "super_admin": bool(account.super_admin) and tenant.type == "company",
        "roles": roles,
        "created_at": account.created_at.isoformat(),
        "last_login_at": last.created_at.isoformat() if last is not None else None,
        "last_login_method": last.method if last is not None else None,
        "last_login_ip": last_ip,
    }
    yes, no = _t(context, "sim", "yes"), _t(context, "não", "no")
    status = account.status + (_t(context, " (bloqueio temporário por senha errada)", " (locked out by failed logins)") if locked else "")
    lines = [
        f"{shown_name} <{shown_email}>",
        f"id {account.id}, tenant {tenant.id} ({tenant.type})",
        "Status: " + status,
        _t(context, "E-mail verificado: ", "E-mail verified: ") + (yes if account.email_verified else no),
        "TOTP: " + (yes if account.totp_enabled else no),
        _t(context, "Papéis: ", "Roles: ") + (", ".join(f"{d}={r}" for d, r in sorted(roles.items())) or "-"),
        _t(context, "Criada: ", "Created: ") + account.created_at.strftime("%Y-%m-%d %H:%M UTC"),
        _t(context, "Último login: ", "Last login: ")
        + (f"{last.created_at.strftime('%Y-%m-%d %H:%M UTC')} ({last.method}, {last_ip or '-'})" if last is not None else "-"),
    ]
    if not pii:
        lines.append(_t(context, f"Dados pessoais mascarados (falta {PII}).", f"Personal data masked (needs {PII})."))
    await kernel.audit(
        "auth.user_lookup",
        actor=context.actor,
        target=f"user:{account.id}",
        details={"channel": context.channel, "pii": pii, "tenant_id": tenant.id},
    )
    return CommandReply("\n".join(lines), data=data)


COMMANDS = [
    StaffCommand(
        "user",
        {
            "pt-BR": "Conta por e-mail: status, papéis, verificação, criação, último login",
            "en": "Account by e-mail: status, roles, verification, creation, last login",
        },
        user,
        permission="users:read",
        arguments=UserArguments,
    ),
]
