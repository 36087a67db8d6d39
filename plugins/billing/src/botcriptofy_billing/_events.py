"""Typed kernel events that billing publishes through the outbox."""

from __future__ import annotations

from datetime import datetime

from botcriptofy import Event

from ._money import Money


class SubscriptionChanged(Event):
    """A tenant's subscription changed: plan, status, interval, renewal or trial dates, cancellation."""

    event_type = "billing.subscription_changed"

    tenant_id: str
    subscription_id: str | None
    plan: str
    previous_plan: str | None
    status: str
    previous_status: str | None
    interval: str | None = None
    cancel_at_period_end: bool = False
    current_period_end: datetime | None = None
    trial_end: datetime | None = None
    reason: str = ""


class PaymentFailed(Event):
    """An invoice payment failed; ``final`` when Stripe will not retry it (dunning is over)."""

    event_type = "billing.payment_failed"

    tenant_id: str
    invoice_id: str
    subscription_id: str | None
    amount_due: Money
    attempt_count: int
    next_payment_attempt: datetime | None
    final: bool


class PaymentSucceeded(Event):
    """An invoice was paid."""

    event_type = "billing.payment_succeeded"

    tenant_id: str
    invoice_id: str
    subscription_id: str | None
    amount_paid: Money


class TrialEnding(Event):
    """A trial ends soon (Stripe says so three days before)."""

    event_type = "billing.trial_ending"

    tenant_id: str
    subscription_id: str
    plan: str
    trial_end: datetime | None


class QuotaWarning(Event):
    """A quota crossed the warning share (80 %) of its limit in the current period."""

    event_type = "billing.quota_warning"

    tenant_id: str
    quota: str
    period: str
    used: int
    limit: int
    plan: str
    upgrade_to: str | None


class QuotaExhausted(Event):
    """A quota refused a consumption: the limit is reached for the period."""

    event_type = "billing.quota_exhausted"

    tenant_id: str
    quota: str
    period: str
    used: int
    limit: int
    plan: str
    upgrade_to: str | None


class Refunded(Event):
    """Money was given back on a charge (``charge.refunded``): ``amount`` is what this refund added."""

    event_type = "billing.refunded"

    tenant_id: str
    charge_id: str
    amount: Money
    amount_refunded: Money
    full: bool
