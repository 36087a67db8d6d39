"""Staff commands: ``/payments`` (a tenant's recent invoices and payments) and ``/subscription`` (its plan and status).

Both take a tenant id or an account's e-mail address; an e-mail is resolved to its tenant through the
identity plugin (``kernel.resolve_recipients("email:<address>")``), so billing never reads another
plugin's tables. Both need ``billing:read`` (finance and subscriptions departments, viewer and up).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select

from botcriptofy import CommandContext, CommandReply, StaffCommand

from ._models import Invoice
from ._money import Money
from ._service import database, standing, to_datetime
from ._state import state_of

PERMISSION = "billing:read"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TENANT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class Target(BaseModel):
    who: str = Field(min_length=1, max_length=320, description="A tenant id, or the e-mail address of an account of that tenant.")

    @field_validator("who")
    @classmethod
    def _tenant_or_email(cls, value: str) -> str:
        value = value.strip()
        if "@" in value:
            if not _EMAIL.match(value):
                raise ValueError("not an e-mail address")
            return value.lower()
        if not _TENANT.match(value):
            raise ValueError("neither a tenant id nor an e-mail address")
        return value


class PaymentsArguments(Target):
    limit: int = Field(10, ge=1, le=50, description="How many invoices, newest first (1-50).")


def _t(context: CommandContext, pt: str, en: str) -> str:
    return pt if context.locale == "pt-BR" else en


def _iso(seconds: int | None) -> str | None:
    moment = to_datetime(seconds)
    return moment.isoformat() if moment is not None else None


def _day(seconds: int | None) -> str:
    moment = to_datetime(seconds)
    return moment.strftime("%Y-%m-%d") if moment is not None else "-"


async def _tenant(context: CommandContext, who: str) -> tuple[str | None, CommandReply | None]:
    """Return the tenant ``who`` names, or a reply saying no active account has that e-mail."""
    if "@" not in who:
        return who, None
    people = await context.kernel.resolve_recipients(f"email:{who}")
    tenant = next((p.tenant_id for p in people if p.tenant_id), None)
    if tenant is None:
        text = _t(
            context,
            "Nenhuma conta ativa com esse e-mail. Use o id do tenant (/user mostra o de uma conta bloqueada).",
            "No active account has that e-mail. Use the tenant id (/user shows a blocked account's).",
        )
        return None, CommandReply(text, data={"found": False})
    return tenant, None


async def payments(context: CommandContext) -> CommandReply:
    arguments = context.arguments
    assert isinstance(arguments, PaymentsArguments)
    tenant, missing = await _tenant(context, arguments.who)
    if missing is not None or tenant is None:
        return missing or CommandReply("-")
    async with database(context.kernel).session(system=True) as session:
        query = select(Invoice).where(Invoice.tenant_id == tenant).order_by(Invoice.created.desc(), Invoice.id).limit(arguments.limit)
        rows = list((await session.scalars(query)).all())
    if not rows:
        text = _t(context, f"Tenant {tenant}: nenhuma fatura registrada.", f"Tenant {tenant}: no invoices on record.")
        return CommandReply(text, data={"found": True, "tenant_id": tenant, "invoices": []})
    status_words = {
        "paid": _t(context, "paga", "paid"),
        "payment_failed": _t(context, "falhou", "failed"),
        "open": _t(context, "em aberto", "open"),
        "void": _t(context, "anulada", "void"),
        "uncollectible": _t(context, "incobrável", "uncollectible"),
    }
    lines = [_t(context, f"Tenant {tenant}: últimas {len(rows)} faturas", f"Tenant {tenant}: last {len(rows)} invoices")]
    invoices: list[dict[str, Any]] = []
    for row in rows:
        due = Money(amount_minor=row.amount_due, currency=row.currency)
        paid = Money(amount_minor=row.amount_paid, currency=row.currency)
        attempts = _t(context, f", {row.attempt_count} tentativa(s)", f", {row.attempt_count} attempt(s)") if row.status != "paid" else ""
        when = _t(context, f" em {_day(row.paid_at)}", f" on {_day(row.paid_at)}") if row.paid_at else ""
        lines.append(f"{_day(row.created)} {row.number or row.id} {due} — {status_words.get(row.status, row.status)}{when}{attempts}")
        invoices.append(
            {
                "id": row.id,
                "number": row.number,
                "subscription_id": row.subscription_id,
                "status": row.status,
                "amount_due": due.model_dump(mode="json"),
                "amount_paid": paid.model_dump(mode="json"),
                "attempt_count": row.attempt_count,
                "created": _iso(row.created),
                "paid_at": _iso(row.paid_at),
            }
        )
    return CommandReply("\n".join(lines), data={"found": True, "tenant_id": tenant, "invoices": invoices})


async def subscription(context: CommandContext) -> CommandReply:
    arguments = context.arguments
    assert isinstance(arguments, Target)
    tenant, missing = await _tenant(context, arguments.who)
    if missing is not None or tenant is None:
        return missing or CommandReply("-")
    catalog = state_of(context.kernel).catalog
    async with database(context.kernel).session(system=True) as session:
        found = await standing(session, catalog, tenant)
    sub = found.subscription
    period_end = sub.current_period_end if sub is not None else None
    trial_end = sub.trial_end if sub is not None else None
    in_trial = sub is not None and sub.status == "trialing" and trial_end is not None and trial_end > datetime.now(UTC).timestamp()
    cancels = _t(context, " (cancela no fim do período)", " (cancels at period end)")
    lines = [
        f"Tenant {tenant}",
        _t(context, "Plano: ", "Plan: ") + f"{found.plan.name} ({found.plan.code})",
        "Status: " + found.status + (cancels if sub is not None and sub.cancel_at_period_end else ""),
        _t(context, "Fim do período: ", "Period ends: ") + _day(period_end),
        _t(context, "Teste: ", "Trial: ")
        + (_t(context, f"até {_day(trial_end)}", f"until {_day(trial_end)}") if in_trial else _t(context, "não", "no")),
    ]
    if sub is not None:
        lines.append(_t(context, "Assinatura Stripe: ", "Stripe subscription: ") + sub.id)
    data = {
        "found": True,
        "tenant_id": tenant,
        "plan": found.plan.code,
        "status": found.status,
        "interval": sub.interval if sub is not None else None,
        "subscription_id": sub.id if sub is not None else None,
        "current_period_end": _iso(period_end),
        "trial_end": _iso(trial_end),
        "in_trial": in_trial,
        "cancel_at_period_end": bool(sub.cancel_at_period_end) if sub is not None else False,
    }
    return CommandReply("\n".join(lines), data=data)


COMMANDS = [
    StaffCommand(
        "payments",
        {
            "pt-BR": "Faturas e pagamentos recentes de um tenant (id ou e-mail)",
            "en": "A tenant's recent invoices and payments (id or e-mail)",
        },
        payments,
        permission=PERMISSION,
        arguments=PaymentsArguments,
    ),
    StaffCommand(
        "subscription",
        {"pt-BR": "Plano, status, fim do período e teste de um tenant", "en": "A tenant's plan, status, period end and trial"},
        subscription,
        permission=PERMISSION,
        arguments=Target,
    ),
]
