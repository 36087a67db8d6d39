"""LGPD hooks: what billing holds about a person's own tenant, and how it forgets them.

Billing data belongs to a tenant; it concerns a person only when the tenant is theirs (a trader or
an influencer), which the privacy request says with ``DataSubject.tenant_id``. Subscriptions,
invoices and payments are kept five years (tax law), anonymised: the link to the Stripe customer
(an external account identifier) is removed, the tenant id is already a pseudonym.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from botcriptofy import DataSubject, Kernel

from ._models import Customer, Invoice, QuotaUsage, Subscription, WebhookEvent
from ._service import database

LEGAL_HOLD = "invoices and payments are kept 5 years (CTN Art. 173/174), anonymised: no link to the Stripe customer"


async def export(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    tenant = subject.tenant_id
    if tenant is None:
        return None
    async with database(kernel).session(system=True) as session:
        customer = await session.get(Customer, tenant)
        subscriptions = (await session.scalars(select(Subscription).where(Subscription.tenant_id == tenant))).all()
        ledger = (await session.scalars(select(WebhookEvent).where(WebhookEvent.tenant == tenant))).all()
        usage = (await session.scalars(select(QuotaUsage).where(QuotaUsage.tenant_id == tenant))).all()
        invoices = (await session.scalars(select(Invoice).where(Invoice.tenant_id == tenant).order_by(Invoice.created))).all()
    if customer is None and not subscriptions and not ledger and not usage and not invoices:
        return None
    return {
        "customer": None
        if customer is None
        else {"stripe_customer_id": customer.stripe_customer_id, "assigned_plan": customer.assigned_plan, "had_trial": customer.had_trial},
        "subscriptions": [
            {
                "id": s.id,
                "plan": s.plan,
                "interval": s.interval,
                "status": s.status,
                "current_period_end": s.current_period_end,
                "trial_end": s.trial_end,
                "canceled_at": s.canceled_at,
                "ended_at": s.ended_at,
            }
            for s in subscriptions
        ],
        "billing_events": [{"id": e.id, "type": e.type, "object_id": e.object_id, "created": e.created} for e in ledger],
        "quota_usage": [{"quota": u.quota, "period": u.period, "used": u.used} for u in usage],
        "invoices": [
            {
                "id": i.id,
                "number": i.number,
                "status": i.status,
                "currency": i.currency,
                "amount_due": i.amount_due,
                "amount_paid": i.amount_paid,
                "created": i.created,
                "paid_at": i.paid_at,
            }
            for i in invoices
        ],
    }


async def erase(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    tenant = subject.tenant_id
    if tenant is None:
        return None
    async with database(kernel).session(system=True, write_lock=True) as session:
        customer = await session.get(Customer, tenant)
        external = customer.stripe_customer_id if customer is not None else None
        held = len((await session.scalars(select(Subscription.id).where(Subscription.tenant_id == tenant))).all())
        if customer is None and not held:
            return None
        if customer is not None:
            customer.stripe_customer_id = None
        await session.execute(update(Subscription).where(Subscription.tenant_id == tenant).values(customer_id=None))
        if external is not None:
            await session.execute(update(WebhookEvent).where(WebhookEvent.object_id == external).values(object_id=None))
        await session.execute(delete(QuotaUsage).where(QuotaUsage.tenant_id == tenant))
    return {
        "erased": ["Stripe customer identifier", "quota usage"],
        "kept": {f"{held} subscription record(s) and the invoice and payment events": LEGAL_HOLD},
    }
