"""The HTTP API under ``/v1/billing``."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import stripe
from pydantic import BaseModel, Field
from starlette.requests import Request

from botcriptofy import Actor, ProblemError, Route, kernel_of, require

from ._money import Money
from ._plans import QUOTAS, RATE_LIMITS, Interval, Plan
from ._service import (
    ENTITLED,
    Standing,
    apply_subscription,
    assign,
    database,
    invalidate,
    link_customer,
    standing,
    to_datetime,
    usage,
)
from ._state import BillingState, state_of
from ._stripe import provider_problem
from ._webhook import receive

TAGS = ("billing",)


class PlanOut(BaseModel):
    code: str
    name: str
    description: str
    sold: bool
    trial_days: int
    prices: dict[str, Money] = Field(description="Price per interval (month, year), exact, in BRL.")
    limits: dict[str, int | None] = Field(description="Each limit; null is unlimited.")
    features: list[str]


class CheckoutIn(BaseModel):
    plan: str = Field(description="The plan to buy: pro or enterprise.", examples=["pro"])
    interval: Interval = Field(Interval.month, description="Billing interval: month or year.")


class ChangeIn(BaseModel):
    plan: str = Field(description="The plan to move to (upgrade or downgrade, prorated).")
    interval: Interval = Field(Interval.month)


class UrlOut(BaseModel):
    url: str
    id: str | None = None


class SubscriptionOut(BaseModel):
    plan: str = Field(description="The plan that applies now.")
    plan_name: str
    status: str = Field(description="trialing, active, past_due, unpaid, canceled, incomplete, incomplete_expired; none without one.")
    interval: str | None
    subscription_id: str | None
    current_period_end: datetime | None
    trial_end: datetime | None
    cancel_at_period_end: bool
    limits: dict[str, int | None]
    features: list[str]


class UsageOut(BaseModel):
    quota: str
    period: str
    used: int
    limit: int | None
    description: str


class WebhookOut(BaseModel):
    received: bool
    duplicate: bool
    event: str
    outcome: str


class AssignIn(BaseModel):
    tenant_id: str = Field(min_length=1, max_length=64)
    plan: str | None = Field(description="A plan code (internal for influencers), or null to remove the assignment.")


def plan_out(plan: Plan) -> PlanOut:
    return PlanOut(code=plan.code, name=plan.name, description=plan.description, sold=plan.sold, trial_days=plan.trial_days,
                   prices={interval.value: price for interval, price in plan.prices.items()},
                   limits={name: plan.limit(name) for name in (*QUOTAS, *RATE_LIMITS)}, features=sorted(plan.features))


def subscription_out(found: Standing) -> SubscriptionOut:
    sub = found.subscription
    return SubscriptionOut(
        plan=found.plan.code,
        plan_name=found.plan.name,
        status=found.status,
        interval=sub.interval if sub is not None else None,
        subscription_id=sub.id if sub is not None else None,
        current_period_end=to_datetime(sub.current_period_end) if sub is not None else None,
        trial_end=to_datetime(sub.trial_end) if sub is not None else None,
        cancel_at_period_end=sub.cancel_at_period_end if sub is not None else False,
        limits={name: found.plan.limit(name) for name in (*QUOTAS, *RATE_LIMITS)},
        features=sorted(found.plan.features),
    )


async def _tenant(request: Request) -> tuple[Actor, str]:
    actor = await require(request)
    if not actor.tenant_id:
        raise ProblemError(403, "No tenant", "Billing applies to a tenant; this caller belongs to none.")
    return actor, actor.tenant_id


def _sold_plan(state: BillingState, code: str) -> Plan:
    if code not in state.catalog:
        raise ProblemError(422, "Validation failed", f"Unknown plan '{code}'.",
                           errors=[{"field": "plan", "message": f"choose one of: {', '.join(p.code for p in state.catalog.sold)}",
                                    "type": "enum", "in": "body"}])
    plan = state.catalog[code]
    if not plan.sold:
        raise ProblemError(422, "Validation failed", f"The {plan.name} plan is not for sale.",
                           errors=[{"field": "plan", "message": f"choose one of: {', '.join(p.code for p in state.catalog.sold)}",
                                    "type": "enum", "in": "body"}])
    return plan


async def list_plans(request: Request) -> list[PlanOut]:
    """List the plans with their prices, trials, limits and features."""
    state = state_of(kernel_of(request))
    return [plan_out(plan) for plan in state.catalog if plan.sold or plan.default]


async def get_subscription(request: Request) -> SubscriptionOut:
    """The caller's tenant's plan and subscription: status, period end, trial end, cancel at period end."""
    _, tenant = await _tenant(request)
    kernel = kernel_of(request)
    state = state_of(kernel)
    async with database(kernel).session(tenant_id=tenant) as session:
        return subscription_out(await standing(session, state.catalog, tenant))


async def get_usage(request: Request) -> list[UsageOut]:
    """The caller's tenant's use of each quota in the current period."""
    _, tenant = await _tenant(request)
    return [UsageOut(**row) for row in await usage(kernel_of(request), tenant)]


async def _account(request: Request) -> tuple[Actor, str, BillingState, Standing]:
    actor, tenant = await _tenant(request)
    kernel = kernel_of(request)
    state = state_of(kernel)
    state.stripe()  # 503 before anything else when Stripe keys are missing
    async with database(kernel).session(tenant_id=tenant) as session:
        found = await standing(session, state.catalog, tenant)
    if found.customer is not None and found.customer.assigned_plan and not state.catalog[found.customer.assigned_plan].sold \
            and not state.catalog[found.customer.assigned_plan].default:
        raise ProblemError(403, "Billing not available", f"This account is on the {found.plan.name} plan, which is not billed.")
    return actor, tenant, state, found


def _require_verified_email(actor: Actor) -> None:
    """Paid plans need a proved address: refused when the identity plugin says the caller's e-mail is unverified.

    ``email_verified`` is one of the kernel's well-known actor attributes (docs/hooks.md); a caller
    whose identity plugin does not set it is not refused.
    """
    if (actor.attributes or {}).get("email_verified") is False:
        raise ProblemError(403, "E-mail not verified",
                           "Verify this account's e-mail address before subscribing to a paid plan: open the link we sent, "
                           "or ask for a new one with POST /v1/auth/email/verify/resend.",
                           type="https://botcriptofy.dev/problems/email-not-verified", reason="email_not_verified")


async def checkout(request: Request, *, body: CheckoutIn) -> UrlOut:
    """Start Stripe Checkout for a plan and interval; answers the URL to send the customer to (a verified e-mail is needed)."""
    _require_verified_email(await require(request))
    actor, tenant, state, found = await _account(request)
    plan = _sold_plan(state, body.plan)
    sub = found.subscription
    if sub is not None and sub.status in ENTITLED and not sub.dunning_exhausted:
        raise ProblemError(409, "Already subscribed",
                           f"This tenant already has a {sub.status} {state.catalog[sub.plan].name} subscription; "
                           "change it with POST /v1/billing/subscription/change or manage it in the portal.")
    gateway = state.stripe()
    kernel = kernel_of(request)
    try:
        customer_id = found.customer.stripe_customer_id if found.customer is not None else None
        if not customer_id:
            attributes = actor.attributes or {}
            customer_id = await gateway.create_customer(tenant, email=attributes.get("email"), name=attributes.get("name"))
            async with database(kernel).session(tenant_id=tenant, write_lock=True) as session:
                await link_customer(session, tenant, customer_id)
        price = await gateway.price(plan, body.interval)
        had_trial = found.customer.had_trial if found.customer is not None else False
        trial_days = plan.trial_days if state.settings.trials and not had_trial else 0
        session_obj = await gateway.create_checkout(
            tenant_id=tenant, customer=customer_id, plan=plan, interval=body.interval, price_id=price["id"], trial_days=trial_days,
            success_url=state.settings.success_url, cancel_url=state.settings.cancel_url,
        )
    except stripe.StripeError as error:
        raise provider_problem(error) from error
    return UrlOut(url=session_obj["url"], id=session_obj.get("id"))


async def portal(request: Request) -> UrlOut:
    """A Stripe customer-portal link: payment methods, invoices, cancellation."""
    _, _, state, found = await _account(request)
    if found.customer is None or not found.customer.stripe_customer_id:
        raise ProblemError(409, "No billing account", "This tenant has never subscribed; start with POST /v1/billing/checkout.")
    try:
        session_obj = await state.stripe().create_portal(customer=found.customer.stripe_customer_id,
                                                         return_url=state.settings.portal_return_url)
    except stripe.StripeError as error:
        raise provider_problem(error) from error
    return UrlOut(url=session_obj["url"], id=session_obj.get("id"))


async def _current(request: Request) -> tuple[str, BillingState, Standing]:
    _, tenant, state, found = await _account(request)
    sub = found.subscription
    if sub is None or sub.status not in ENTITLED:
        raise ProblemError(409, "No active subscription",
                           "This tenant has no active subscription; start one with POST /v1/billing/checkout.")
    return tenant, state, found


async def _apply_and_show(request: Request, tenant: str, snapshot: dict[str, Any], reason: str) -> SubscriptionOut:
    kernel = kernel_of(request)
    state = state_of(kernel)
    async with database(kernel).session(tenant_id=tenant, write_lock=True) as session:
        await apply_subscription(kernel, state, session, snapshot, as_of=float(int(time.time())), reason=reason, tenant_hint=tenant)
    await invalidate(kernel, tenant)
    async with database(kernel).session(tenant_id=tenant) as session:
        return subscription_out(await standing(session, state.catalog, tenant))


async def change_plan(request: Request, *, body: ChangeIn) -> SubscriptionOut:
    """Upgrade or downgrade the subscription; Stripe prorates the difference on the next invoice."""
    tenant, state, found = await _current(request)
    plan = _sold_plan(state, body.plan)
    assert found.subscription is not None
    if found.subscription.plan == plan.code and found.subscription.interval == body.interval.value:
        raise ProblemError(409, "Nothing to change", f"The subscription is already on {plan.name} ({body.interval.value}ly).")
    gateway = state.stripe()
    try:
        price = await gateway.price(plan, body.interval)
        current = await gateway.retrieve_subscription(found.subscription.id)
        updated = await gateway.change_price(current, price["id"], tenant_id=tenant, plan=plan, interval=body.interval)
    except stripe.StripeError as error:
        raise provider_problem(error) from error
    return await _apply_and_show(request, tenant, updated, "plan_change")


async def cancel(request: Request) -> SubscriptionOut:
    """Cancel at the end of the current period (the plan applies until then)."""
    tenant, state, found = await _current(request)
    assert found.subscription is not None
    try:
        updated = await state.stripe().set_cancel_at_period_end(found.subscription.id, True)
    except stripe.StripeError as error:
        raise provider_problem(error) from error
    return await _apply_and_show(request, tenant, updated, "cancel")


async def reactivate(request: Request) -> SubscriptionOut:
    """Undo a cancellation at period end."""
    tenant, state, found = await _current(request)
    assert found.subscription is not None
    if not found.subscription.cancel_at_period_end:
        raise ProblemError(409, "Not canceled", "The subscription is not set to cancel; there is nothing to reactivate.")
    try:
        updated = await state.stripe().set_cancel_at_period_end(found.subscription.id, False)
    except stripe.StripeError as error:
        raise provider_problem(error) from error
    return await _apply_and_show(request, tenant, updated, "reactivate")


async def webhook(request: Request) -> WebhookOut:
    """Stripe webhook endpoint: the signature is checked against the raw body; each event is processed once."""
    return WebhookOut(**await receive(request, kernel_of(request)))


async def assign_plan(request: Request, *, body: AssignIn) -> SubscriptionOut:
    """Assign an unsold plan (internal, for influencers) to a tenant, or remove the assignment (subscriptions department)."""
    kernel = kernel_of(request)
    state = state_of(kernel)
    if body.plan is not None and body.plan not in state.catalog:
        raise ProblemError(422, "Validation failed", f"Unknown plan '{body.plan}'.",
                           errors=[{"field": "plan", "message": "unknown plan", "type": "enum", "in": "body"}])
    await assign(kernel, body.tenant_id, body.plan)
    async with database(kernel).session(tenant_id=body.tenant_id, write_lock=True) as session:
        return subscription_out(await standing(session, state.catalog, body.tenant_id))


PROBLEMS_502 = {502: "Stripe refused or could not be reached", 503: "Billing not configured (no Stripe keys) or storage disabled"}


def routes() -> list[Route]:
    return [
        Route("/v1/billing/plans", list_plans, response=list[PlanOut], tags=TAGS),
        Route("/v1/billing/subscription", get_subscription, response=SubscriptionOut, authenticated=True, tags=TAGS,
              responses={403: "No tenant", 503: "Storage disabled"}),
        Route("/v1/billing/usage", get_usage, response=list[UsageOut], authenticated=True, tags=TAGS),
        Route("/v1/billing/checkout", checkout, methods=["POST"], body=CheckoutIn, response=UrlOut, authenticated=True, tags=TAGS,
              responses={403: "Not billed, or the e-mail address is not verified", 409: "Already subscribed", **PROBLEMS_502}),
        Route("/v1/billing/portal", portal, methods=["POST"], response=UrlOut, authenticated=True, tags=TAGS,
              responses={403: "Not billed", 409: "Never subscribed", **PROBLEMS_502}),
        Route("/v1/billing/subscription/change", change_plan, methods=["POST"], body=ChangeIn, response=SubscriptionOut,
              authenticated=True, tags=TAGS, responses={409: "No active subscription, or nothing to change", **PROBLEMS_502}),
        Route("/v1/billing/subscription/cancel", cancel, methods=["POST"], response=SubscriptionOut, authenticated=True, tags=TAGS,
              responses={409: "No active subscription", **PROBLEMS_502}),
        Route("/v1/billing/subscription/reactivate", reactivate, methods=["POST"], response=SubscriptionOut, authenticated=True,
              tags=TAGS, responses={409: "No active subscription, or not canceled", **PROBLEMS_502}),
        Route("/v1/billing/webhook", webhook, methods=["POST"], response=WebhookOut, tags=TAGS,
              responses={400: "Missing, forged or stale signature, or not an event", 413: "Body too large", **PROBLEMS_502}),
        Route("/v1/billing/admin/assign", assign_plan, methods=["POST"], body=AssignIn, response=SubscriptionOut,
              permission="subscriptions:manage", tags=TAGS),
    ]

