"""The business figures billing owns, for the kernel's ``business_metrics`` hook (docs/hooks.md "Business figures").

Counts come from the invoice ledger, the refunds and the subscription state; money is in cents of the
catalogue's currency (amounts in another currency are left out). Billing keeps each subscription's
last known state, not its history: the levels (``subscriptions_*``, ``mrr_cents``) are the current
state of the subscriptions that existed at ``until``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ._models import Invoice, Refund, Subscription
from ._plans import Catalog, Interval
from ._state import state_of

if TYPE_CHECKING:
    from botcriptofy import Kernel

TRIAL_NOTICE = 3 * 86400  # "trials ending in 3 days", the subscriptions agent's horizon
RECURRING = ("active", "past_due")


def monthly_cents(catalog: Catalog, plan: str, interval: str | None) -> int:
    """What one subscription to ``plan`` brings in a month: the monthly price, or the yearly one over twelve."""
    if plan not in catalog:
        return 0
    found = catalog[plan]
    try:
        if interval == Interval.year.value:
            return round(found.price(Interval.year).amount_minor / 12)
        return found.price(Interval.month).amount_minor
    except KeyError:
        return 0


async def business_metrics(kernel: Kernel, since: datetime, until: datetime) -> dict[str, int] | None:
    """Billing's figures for ``[since, until)``; None without a database (billing keeps nothing then)."""
    if not kernel.has_database():
        return None
    catalog = state_of(kernel).catalog
    start, end = int(since.timestamp()), int(until.timestamp())
    currency = catalog.currency.upper()
    async with kernel.database().session(system=True) as session:
        paid = (
            await session.execute(
                select(func.count(), func.coalesce(func.sum(Invoice.amount_paid), 0)).where(
                    Invoice.status == "paid", Invoice.paid_at >= start, Invoice.paid_at < end, Invoice.currency == currency
                )
            )
        ).one()
        failed = (
            await session.execute(
                select(func.count()).where(Invoice.status == "payment_failed", Invoice.state_as_of >= start, Invoice.state_as_of < end)
            )
        ).scalar_one()
        refunds = (
            await session.execute(
                select(func.count(), func.coalesce(func.sum(Refund.amount), 0)).where(
                    Refund.created >= start, Refund.created < end, Refund.currency == currency
                )
            )
        ).one()
        rows = (
            await session.execute(
                select(
                    Subscription.plan,
                    Subscription.interval,
                    Subscription.status,
                    Subscription.trial_end,
                    Subscription.canceled_at,
                    Subscription.ended_at,
                    Subscription.created_at,
                ).where(Subscription.created_at < end)
            )
        ).all()
    figures = {
        "payments_succeeded": int(paid[0]),
        "payments_failed": int(failed),
        "revenue_cents": int(paid[1]),
        "refunds": int(refunds[0]),
        "refunds_cents": int(refunds[1]),
        "trials_started": 0,
        "trials_converted": 0,
        "trials_ending_3d": 0,
        "subscriptions_active": 0,
        "subscriptions_trialing": 0,
        "subscriptions_past_due": 0,
        "subscriptions_canceled": 0,
        "mrr_cents": 0,
    }
    for plan, interval, status, trial_end, canceled_at, ended_at, created_at in rows:
        if trial_end and start <= created_at:
            figures["trials_started"] += 1
        if trial_end and start <= trial_end < end and status in RECURRING:
            figures["trials_converted"] += 1
        if status == "trialing" and trial_end and end <= trial_end < end + TRIAL_NOTICE:
            figures["trials_ending_3d"] += 1
        if status in ("active", "trialing", "past_due"):
            figures[f"subscriptions_{status}"] += 1
        stopped = canceled_at or ended_at
        if status == "canceled" and stopped and start <= stopped < end:
            figures["subscriptions_canceled"] += 1
        if status in RECURRING:
            figures["mrr_cents"] += monthly_cents(catalog, plan, interval)
    return figures
