"""Stripe webhooks: verified, recorded by event id (processed once), applied in order of the object's state."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import stripe
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request

from botcriptofy import ProblemError, read_body

from . import _invoices as invoices
from ._events import PaymentFailed, PaymentSucceeded, Refunded, TrialEnding
from ._models import Refund, Subscription, WebhookEvent
from ._money import Money
from ._service import (
    apply_subscription,
    database,
    invalidate,
    link_customer,
    now,
    object_id,
    publish,
    tenant_of_customer,
    to_datetime,
)
from ._signature import verify
from ._state import BillingState, state_of
from ._stripe import TENANT_METADATA, not_configured, provider_problem

if TYPE_CHECKING:
    from botcriptofy import Kernel

log = logging.getLogger("botcriptofy.billing")

HANDLED = frozenset({
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "charge.refunded",
})


class _Duplicate(Exception):
    """The event id is already recorded: another delivery processed it."""


@dataclass
class Fetched:
    """A subscription fetched from Stripe while handling an event, and when the fetch started."""

    snapshot: dict[str, Any] | None
    as_of: float


def invoice_subscription(invoice: dict[str, Any]) -> str | None:
    """The subscription an invoice bills: ``parent.subscription_details.subscription`` (or the older ``subscription``)."""
    details = ((invoice.get("parent") or {}).get("subscription_details")) or {}
    return object_id(details.get("subscription")) or object_id(invoice.get("subscription"))


def _subscription_to_fetch(event: dict[str, Any]) -> str | None:
    kind, obj = event["type"], event["data"]["object"]
    if kind == "checkout.session.completed" and obj.get("mode") == "subscription":
        return object_id(obj.get("subscription"))
    if kind.startswith("invoice."):
        return invoice_subscription(obj)
    return None


async def receive(request: Request, kernel: Kernel) -> dict[str, Any]:
    """Handle one webhook delivery; return what happened. Raises 400 problems for unverifiable deliveries."""
    state = state_of(kernel)
    secret = state.settings.webhook_secret.get_secret_value()
    if not secret:
        raise not_configured()
    payload = await read_body(request, kernel.kernel_settings.max_body_bytes)
    try:
        event = verify(payload, request.headers.get("stripe-signature"), secret, state.settings.webhook_tolerance)
    except ProblemError as refusal:
        await kernel.audit("billing.webhook_refused", actor_kind="external", actor_id="stripe", outcome="denied", target="webhook:stripe",
                           client_address=request.client.host if request.client else None, details={"reason": refusal.detail})
        raise
    return await process(kernel, state, event)


async def process(kernel: Kernel, state: BillingState, event: dict[str, Any]) -> dict[str, Any]:
    db = database(kernel)
    event_id = event["id"]
    async with db.session(system=True, write_lock=True) as session:
        seen = (await session.execute(select(WebhookEvent.outcome).where(WebhookEvent.id == event_id))).scalar_one_or_none()
    if seen is not None:
        return {"received": True, "duplicate": True, "event": event_id, "outcome": seen}
    fetched: Fetched | None = None
    to_fetch = _subscription_to_fetch(event) if event["type"] in HANDLED else None
    if to_fetch and state.gateway is not None:
        started = float(int(time.time()))  # whole seconds, like event.created: same-second ties go by lifecycle
        try:
            fetched = Fetched(await state.gateway.retrieve_subscription(to_fetch), started)
        except stripe.InvalidRequestError as error:
            if error.http_status != 404:
                raise provider_problem(error) from error
            fetched = Fetched(None, started)
        except stripe.StripeError as error:
            raise provider_problem(error) from error  # 502: Stripe delivers the event again later
    try:
        async with db.session(system=True, write_lock=True) as session:
            record = WebhookEvent(id=event_id, type=event["type"], created=int(event["created"]),
                                  object_id=object_id(event["data"]["object"]), tenant=None, outcome="processing", received_at=now())
            session.add(record)
            try:
                await session.flush()
            except IntegrityError:
                raise _Duplicate from None
            outcome, tenant = await dispatch(kernel, state, session, event, fetched)
            record.outcome = outcome
            record.tenant = tenant
    except _Duplicate:
        log.info("stripe event %s was processed by a concurrent delivery", event_id)
        return {"received": True, "duplicate": True, "event": event_id, "outcome": "duplicate"}
    if tenant is not None:
        await invalidate(kernel, tenant)
    log.info("stripe event %s (%s): %s", event_id, event["type"], outcome, extra={"tenant_id": tenant})
    return {"received": True, "duplicate": False, "event": event_id, "outcome": outcome}


async def dispatch(kernel: Kernel, state: BillingState, session: Any, event: dict[str, Any],
                   fetched: Fetched | None) -> tuple[str, str | None]:
    kind, obj, created = event["type"], event["data"]["object"], float(event["created"])
    if kind not in HANDLED:
        return "ignored", None
    if kind == "checkout.session.completed":
        tenant = obj.get("client_reference_id") or (obj.get("metadata") or {}).get(TENANT_METADATA)
        if not tenant:
            tenant = await tenant_of_customer(session, object_id(obj.get("customer")))
        if not tenant:
            return "unknown_tenant", None
        if fetched is None or fetched.snapshot is None:
            await link_customer(session, tenant, object_id(obj.get("customer")))
            return "linked", tenant
        return await apply_subscription(kernel, state, session, fetched.snapshot, as_of=fetched.as_of, reason="checkout",
                                        tenant_hint=tenant)
    if kind.startswith("customer.subscription."):
        outcome, tenant = await apply_subscription(kernel, state, session, obj, as_of=created, reason=kind.rpartition(".")[2])
        if kind.endswith("trial_will_end") and tenant is not None:
            row = await session.get(Subscription, obj["id"])
            plan_code = row.plan if row is not None else state.catalog.default.code
            await publish(kernel, session, TrialEnding(tenant_id=tenant, subscription_id=obj["id"], plan=plan_code,
                                                       trial_end=to_datetime(obj.get("trial_end"))),
                          key=f"trial-ending:{obj['id']}:{obj.get('trial_end')}", tenant_id=tenant)
        return outcome, tenant
    if kind == "charge.refunded":
        return await _refunded(kernel, state, session, event)
    # invoices
    subscription_id = invoice_subscription(obj)
    tenant = await tenant_of_customer(session, object_id(obj.get("customer")))
    if tenant is None and subscription_id:
        row = await session.get(Subscription, subscription_id)
        tenant = row.tenant_id if row is not None else None
    if tenant is None:
        details = ((obj.get("parent") or {}).get("subscription_details")) or {}
        tenant = (details.get("metadata") or {}).get(TENANT_METADATA)
    if tenant is None:
        return "unknown_tenant", None
    currency = str(obj.get("currency") or state.catalog.currency)
    await invoices.record(session, tenant_id=tenant, kind=kind, invoice=obj, created=int(created), currency=currency,
                          subscription_id=subscription_id)
    if kind == "invoice.payment_failed":
        final = obj.get("next_payment_attempt") is None
        await publish(kernel, session, PaymentFailed(
            tenant_id=tenant, invoice_id=obj["id"], subscription_id=subscription_id,
            amount_due=Money(amount_minor=int(obj.get("amount_due") or 0), currency=currency),
            attempt_count=int(obj.get("attempt_count") or 1), next_payment_attempt=to_datetime(obj.get("next_payment_attempt")),
            final=final,
        ), key=f"payment-failed:{obj['id']}:{obj.get('attempt_count')}", tenant_id=tenant)
        dunning: bool | None = True if final else None
    else:
        await publish(kernel, session, PaymentSucceeded(
            tenant_id=tenant, invoice_id=obj["id"], subscription_id=subscription_id,
            amount_paid=Money(amount_minor=int(obj.get("amount_paid") or 0), currency=currency),
        ), key=f"payment-succeeded:{obj['id']}", tenant_id=tenant)
        dunning = False
    if subscription_id is None:
        return "recorded", tenant
    snapshot = fetched.snapshot if fetched is not None else None
    as_of = fetched.as_of if fetched is not None else created
    outcome, _ = await apply_subscription(kernel, state, session, snapshot, as_of=as_of, reason=kind.rpartition(".")[2],
                                          subscription_id=subscription_id, dunning_exhausted=dunning, tenant_hint=tenant)
    return outcome, tenant


async def _refunded(kernel: Kernel, state: BillingState, session: Any, event: dict[str, Any]) -> tuple[str, str | None]:
    """``charge.refunded``: record what this event added to the charge's refunded total and publish it."""
    charge = event["data"]["object"]
    tenant = await tenant_of_customer(session, object_id(charge.get("customer")))
    if tenant is None:
        tenant = (charge.get("metadata") or {}).get(TENANT_METADATA)
    if tenant is None:
        return "unknown_tenant", None
    total = int(charge.get("amount_refunded") or 0)
    before = (await session.execute(select(func.max(Refund.amount_refunded)).where(Refund.charge_id == charge["id"]))).scalar_one()
    added = total - int(before or 0)
    if added <= 0:
        return "stale", tenant
    currency = str(charge.get("currency") or state.catalog.currency).upper()
    session.add(Refund(id=event["id"], tenant_id=tenant, charge_id=charge["id"], currency=currency, amount=added,
                       amount_refunded=total, created=int(event["created"])))
    await publish(kernel, session, Refunded(
        tenant_id=tenant, charge_id=charge["id"], amount=Money(amount_minor=added, currency=currency),
        amount_refunded=Money(amount_minor=total, currency=currency), full=bool(charge.get("refunded")),
    ), key=f"refunded:{charge['id']}:{total}", tenant_id=tenant)
    return "refunded", tenant
