"""Billing tables. Times are Unix seconds (as Stripe gives them), portable across SQLite and PostgreSQL.

Tables with a ``tenant_id`` column are tenant-owned: the storage plugin scopes them. The webhook
event ledger is platform-owned (no ``tenant_id``; the tenant it concerned is in ``tenant``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Float, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Customer(Base):
    """A tenant's billing account: its Stripe customer and a plan assigned by staff (influencers)."""

    __tablename__ = "billing_customers"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    assigned_plan: Mapped[str | None] = mapped_column(String(32), nullable=True)
    had_trial: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Subscription(Base):
    """The last known state of one Stripe subscription, and how current that knowledge is."""

    __tablename__ = "billing_subscriptions"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True, nullable=False)
    customer_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    plan: Mapped[str] = mapped_column(String(32), nullable=False)
    interval: Mapped[str | None] = mapped_column(String(8), nullable=True)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    price_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    current_period_end: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    trial_end: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    canceled_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ended_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    dunning_exhausted: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    state_as_of: Mapped[float] = mapped_column(Float, nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class WebhookEvent(Base):
    """Every Stripe event processed, by id: a second delivery of the same id is a duplicate."""

    __tablename__ = "billing_webhook_events"
    __table_args__ = {"info": {"tenant_column": "tenant"}}  # row-level security on the event's tenant (storage plugin)

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(128), nullable=False)
    created: Mapped[int] = mapped_column(BigInteger, nullable=False)
    object_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)
    received_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class QuotaUsage(Base):
    """Units of one quota used by a tenant in one period (``2026-05-14``, ``2026-05`` or ``total``)."""

    __tablename__ = "billing_quota_usage"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    quota: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    warned: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    exhausted: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    updated_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Invoice(Base):
    """The last known state of one Stripe invoice, kept from the invoice webhooks (for staff and exports).

    ``state_as_of`` is the ``created`` time of the event that last changed the row: an older event
    arriving late changes nothing.
    """

    __tablename__ = "billing_invoices"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True, nullable=False)
    subscription_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    currency: Mapped[str] = mapped_column(String(8), nullable=False)
    amount_due: Mapped[int] = mapped_column(BigInteger, nullable=False)
    amount_paid: Mapped[int] = mapped_column(BigInteger, nullable=False)
    attempt_count: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    created: Mapped[int] = mapped_column(BigInteger, nullable=False)
    paid_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    state_as_of: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Refund(Base):
    """Money given back on one charge, one row per ``charge.refunded`` event that added to the charge's refunded total.

    ``amount`` is what this event added (the charge's ``amount_refunded`` minus the largest total
    recorded before for the charge), so partial refunds add up and a late, older event adds nothing.
    """

    __tablename__ = "billing_refunds"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # the Stripe event id
    tenant_id: Mapped[str] = mapped_column(String(64), index=True, nullable=False)
    charge_id: Mapped[str] = mapped_column(String(255), index=True, nullable=False)
    currency: Mapped[str] = mapped_column(String(8), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created: Mapped[int] = mapped_column(BigInteger, nullable=False)


class DunningPause(Base):
    """Dunning reminders held back until ``until`` (for one tenant, or every tenant when ``scope_tenant`` is None).

    Platform-owned (no ``tenant_id``): written by the approved ``billing.pause_dunning`` action, keyed by the approval id.
    """

    __tablename__ = "billing_dunning_pauses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope_tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    until: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
