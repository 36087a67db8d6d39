"""Subscription state, entitlements and quotas over the storage plugin's database."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from botcriptofy import Entitlements, Event, ProblemError, QuotaDecision

from ._events import QuotaExhausted, QuotaWarning, SubscriptionChanged
from ._models import Customer, QuotaUsage, Subscription
from ._plans import QUOTAS, Catalog, Plan, QuotaKind
from ._state import BillingState, state_of
from ._stripe import TENANT_METADATA, plan_of

if TYPE_CHECKING:
    from botcriptofy import Database, Kernel

log = logging.getLogger("botcriptofy.billing")

# Statuses that keep the plan's entitlements. past_due keeps them while Stripe retries (dunning).
ENTITLED = frozenset({"trialing", "active", "past_due"})
TERMINAL = frozenset({"canceled", "incomplete_expired"})
# Lifecycle order, used only to break ties between two snapshots of the same second.
LIFECYCLE = {"incomplete": 0, "trialing": 1, "active": 2, "past_due": 3, "unpaid": 4, "paused": 4, "incomplete_expired": 5, "canceled": 5}
CACHE_NAMESPACE = "billing"


def now() -> int:
    return int(time.time())


def to_datetime(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


def object_id(value: Any) -> str | None:
    """An expandable Stripe field: an id string or an expanded object with ``id``."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def database(kernel: Kernel) -> Database:
    if not kernel.has_database():
        raise ProblemError(503, "Storage not enabled", "Billing keeps subscriptions in the database: enable the storage plugin.",
                           type="https://botcriptofy.dev/problems/storage-not-enabled")
    return kernel.database()


async def publish(kernel: Kernel, session: Any, event: Event, *, key: str, tenant_id: str | None) -> None:
    """Publish ``event`` in ``session``'s transaction (the outbox delivers it after commit)."""
    if kernel.outbox() is not None:
        await kernel.events.publish(event, session=session, idempotency_key=key, tenant_id=tenant_id)
    else:  # no outbox: in-process delivery right away (development without the storage outbox)
        await kernel.events.publish(event, idempotency_key=key, tenant_id=tenant_id)


# ---------------------------------------------------------------------------------------------
# Accounts and the effective plan
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """What a tenant has now: the plan that applies and the subscription it comes from (if any)."""

    plan: Plan
    subscription: Subscription | None
    customer: Customer | None

    @property
    def status(self) -> str:
        if self.subscription is not None:
            return self.subscription.status
        return "assigned" if self.customer is not None and self.customer.assigned_plan else "none"


async def standing(session: Any, catalog: Catalog, tenant_id: str) -> Standing:
    customer = (await session.execute(select(Customer).where(Customer.tenant_id == tenant_id))).scalar_one_or_none()
    subscriptions = list((await session.execute(select(Subscription).where(Subscription.tenant_id == tenant_id))).scalars())
    entitled = [s for s in subscriptions if s.status in ENTITLED and not s.dunning_exhausted and s.plan in catalog]
    latest = max(subscriptions, key=lambda s: (s.state_as_of, s.updated_at), default=None)
    if customer is not None and customer.assigned_plan in catalog:
        return Standing(catalog[customer.assigned_plan], max(entitled, key=lambda s: s.updated_at, default=latest), customer)
    if entitled:
        best = max(entitled, key=lambda s: (catalog[s.plan].rank, s.updated_at))
        return Standing(catalog[best.plan], best, customer)
    return Standing(catalog.default, latest, customer)


async def link_customer(session: Any, tenant_id: str, customer_id: str | None) -> Customer:
    """Get (or create) the tenant's billing account, recording its Stripe customer id."""
    row = (await session.execute(select(Customer).where(Customer.tenant_id == tenant_id))).scalar_one_or_none()
    stamp = now()
    if row is None:
        row = Customer(tenant_id=tenant_id, stripe_customer_id=customer_id, had_trial=False, created_at=stamp, updated_at=stamp)
        session.add(row)
    elif customer_id and row.stripe_customer_id != customer_id:
        row.stripe_customer_id = customer_id
        row.updated_at = stamp
    await session.flush()
    return row


async def assign(kernel: Kernel, tenant_id: str, plan_code: str | None) -> None:
    """Assign a plan that is not sold (internal, for influencers) to a tenant, or remove the assignment."""
    state = state_of(kernel)
    async with database(kernel).session(tenant_id=tenant_id, write_lock=True) as session:
        before = await standing(session, state.catalog, tenant_id)
        customer = await link_customer(session, tenant_id, None)
        customer.assigned_plan = plan_code
        customer.updated_at = now()
        await session.flush()
        after = await standing(session, state.catalog, tenant_id)
        if after.plan.code != before.plan.code:
            await publish(kernel, session, SubscriptionChanged(
                tenant_id=tenant_id, subscription_id=None, plan=after.plan.code, previous_plan=before.plan.code,
                status=after.status, previous_status=before.status, reason="assigned",
            ), key=f"assigned:{tenant_id}:{plan_code}:{customer.updated_at}", tenant_id=tenant_id)
    await invalidate(kernel, tenant_id)


async def tenant_of_customer(session: Any, customer_id: str | None) -> str | None:
    if not customer_id:
        return None
    found = await session.execute(select(Customer.tenant_id).where(Customer.stripe_customer_id == customer_id))
    return found.scalar_one_or_none()  # type: ignore[no-any-return]


async def invalidate(kernel: Kernel, tenant_id: str) -> None:
    try:
        await kernel.cache().delete(f"plan:{tenant_id}", namespace=CACHE_NAMESPACE)
    except Exception:
        log.warning("could not invalidate cached entitlements of tenant %s", tenant_id, exc_info=True)


# ---------------------------------------------------------------------------------------------
# Subscription snapshots
# ---------------------------------------------------------------------------------------------


def _first_item(snapshot: dict[str, Any]) -> dict[str, Any]:
    items = ((snapshot.get("items") or {}).get("data")) or []
    return items[0] if items else {}


async def apply_subscription(kernel: Kernel, state: BillingState, session: Any, snapshot: dict[str, Any] | None, *,
                             as_of: float, reason: str, subscription_id: str | None = None,
                             dunning_exhausted: bool | None = None, tenant_hint: str | None = None) -> tuple[str, str | None]:
    """Record a subscription's state if it is newer than what we know; publish what changed.

    ``snapshot`` is the subscription as Stripe documents it (from an event or the API) and
    ``as_of`` when it was true: the event's ``created`` or the time we fetched it. An older
    snapshot than the stored one is ignored, a canceled subscription never comes back, and two
    snapshots of the same second are ordered by lifecycle. ``dunning_exhausted`` marks (or clears)
    that Stripe gave up collecting. Returns the outcome and the tenant.
    """
    sub_id = snapshot["id"] if snapshot is not None else subscription_id
    if sub_id is None:
        return "ignored", None
    row = await session.get(Subscription, sub_id)
    customer_id = object_id(snapshot.get("customer")) if snapshot is not None else None
    tenant = tenant_hint or ((snapshot or {}).get("metadata") or {}).get(TENANT_METADATA)
    if tenant is None and row is not None:
        tenant = row.tenant_id
    if tenant is None:
        tenant = await tenant_of_customer(session, customer_id)
    if tenant is None:
        log.warning("subscription %s belongs to no known tenant (customer %s); ignored", sub_id, customer_id)
        return "unknown_tenant", None
    if snapshot is None and row is None:
        return "ignored", tenant
    before = await standing(session, state.catalog, tenant)
    previous_status = row.status if row is not None else None
    before_signature = _signature(before.plan, row)
    stale = False
    if snapshot is not None and row is not None:
        status = snapshot.get("status", "")
        stale = (as_of < row.state_as_of
                 or (row.status in TERMINAL and status not in TERMINAL)
                 or (as_of == row.state_as_of and LIFECYCLE.get(status, 0) < LIFECYCLE.get(row.status, 0)))
    stamp = now()
    customer = await link_customer(session, tenant, customer_id) if customer_id else before.customer
    if snapshot is not None and not stale:
        item = _first_item(snapshot)
        plan_code, interval = plan_of(snapshot, state.catalog, state.settings.lookup_key_prefix)
        if plan_code is None:
            plan_code = row.plan if row is not None else state.catalog.default.code
            log.warning("subscription %s has a price no plan knows; keeping plan %s", sub_id, plan_code)
        price = item.get("price") or item.get("plan") or {}
        values = {
            "tenant_id": tenant,
            "customer_id": customer_id,
            "plan": plan_code,
            "interval": interval,
            "status": snapshot.get("status", "incomplete"),
            "price_id": object_id(price),
            "current_period_end": item.get("current_period_end") or snapshot.get("current_period_end"),
            "trial_end": snapshot.get("trial_end"),
            "cancel_at_period_end": bool(snapshot.get("cancel_at_period_end")),
            "canceled_at": snapshot.get("canceled_at"),
            "ended_at": snapshot.get("ended_at"),
            "state_as_of": as_of,
            "updated_at": stamp,
        }
        if row is None:
            row = Subscription(id=sub_id, created_at=stamp, dunning_exhausted=False, **values)
            session.add(row)
        else:
            for key, value in values.items():
                setattr(row, key, value)
        if row.status in ("active", "trialing"):
            row.dunning_exhausted = False  # a payment went through: dunning is over
        if customer is not None and (row.status == "trialing" or row.trial_end):
            customer.had_trial = True
    if row is None:
        return ("stale" if stale else "ignored"), tenant
    if dunning_exhausted is not None and (dunning_exhausted is False or row.status not in ("active", "trialing")):
        row.dunning_exhausted = dunning_exhausted
        row.updated_at = stamp
    await session.flush()
    after = await standing(session, state.catalog, tenant)
    after_signature = _signature(after.plan, row)
    if after_signature != before_signature:
        event = SubscriptionChanged(
            tenant_id=tenant,
            subscription_id=row.id,
            plan=after.plan.code,
            previous_plan=before.plan.code,
            status=row.status,
            previous_status=previous_status,
            interval=row.interval,
            cancel_at_period_end=row.cancel_at_period_end,
            current_period_end=to_datetime(row.current_period_end),
            trial_end=to_datetime(row.trial_end),
            reason=reason,
        )
        key = "subscription:" + ":".join(str(part) for part in (row.id, *after_signature))
        await publish(kernel, session, event, key=key, tenant_id=tenant)
    return ("stale" if stale else "applied"), tenant


# ---------------------------------------------------------------------------------------------
# Entitlements and quotas
# ---------------------------------------------------------------------------------------------


def _signature(plan: Plan, row: Subscription | None) -> tuple[Any, ...]:
    if row is None:
        return (plan.code,)
    return (plan.code, row.plan, row.status, row.interval, row.cancel_at_period_end, row.current_period_end, row.trial_end,
            row.dunning_exhausted)


_ENTITLEMENTS: dict[int, tuple[Plan, Entitlements]] = {}


def entitlements_of(plan: Plan) -> Entitlements:
    """The plan's entitlements: one read-only object per plan, so every request of its tenants shares it."""
    found = _ENTITLEMENTS.get(id(plan))
    if found is not None and found[0] is plan:
        return found[1]
    entitlements = Entitlements(plan=plan.code, limits=MappingProxyType(dict(plan.limits)), features=plan.features)
    if len(_ENTITLEMENTS) >= 256:  # a catalogue has a handful of plans; a reload makes new ones
        _ENTITLEMENTS.clear()
    _ENTITLEMENTS[id(plan)] = (plan, entitlements)
    return entitlements


async def plan_for(kernel: Kernel, tenant_id: str) -> Plan:
    """The tenant's effective plan, cached for ``entitlements_ttl`` seconds (changes invalidate it)."""
    state = state_of(kernel)
    catalog = state.catalog
    if not kernel.has_database():
        if not state.warned_no_database:
            log.warning("no database (storage plugin disabled): every tenant gets the %s plan", catalog.default.name)
            state.warned_no_database = True
        return catalog.default
    cache = kernel.cache()
    ttl = state.settings.entitlements_ttl
    if ttl > 0:
        try:
            cached = await cache.get(f"plan:{tenant_id}", namespace=CACHE_NAMESPACE)
        except Exception:
            cached = None
        if isinstance(cached, str) and cached in catalog:
            return catalog[cached]
    async with kernel.database().session(tenant_id=tenant_id) as session:
        plan = (await standing(session, catalog, tenant_id)).plan
    if ttl > 0:
        try:
            await cache.set(f"plan:{tenant_id}", plan.code, ttl=ttl, namespace=CACHE_NAMESPACE, tags=(f"tenant:{tenant_id}",))
        except Exception:
            log.debug("could not cache entitlements", exc_info=True)
    return plan


def _insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def consume(kernel: Kernel, tenant_id: str, quota_name: str, amount: int) -> QuotaDecision | None:
    """Count ``amount`` units of a quota atomically; refuse past the plan's limit; warn once at the threshold."""
    quota = QUOTAS.get(quota_name)
    if quota is None:
        return None
    state = state_of(kernel)
    plan = await plan_for(kernel, tenant_id)
    limit = plan.limit(quota_name)
    if not kernel.has_database():
        return QuotaDecision(allowed=True, quota=quota_name, used=0, limit=limit, plan=plan.code)
    db = kernel.database()
    period = quota.period_key()
    stamp = now()
    key = (QuotaUsage.tenant_id == tenant_id, QuotaUsage.quota == quota_name, QuotaUsage.period == period)
    threshold = None if limit is None else max(1, int(limit * state.settings.quota_warning_ratio + 0.999999))
    async with db.session(tenant_id=tenant_id, write_lock=True) as session:
        await session.execute(
            _insert(db.dialect)(QuotaUsage)
            .values(tenant_id=tenant_id, quota=quota_name, period=period, used=0, warned=False, exhausted=False, updated_at=stamp)
            .on_conflict_do_nothing(index_elements=["tenant_id", "quota", "period"])
        )
        if amount < 0:  # releasing a gauge (a bot was deleted): never below zero, and a later crossing warns again
            new_used = QuotaUsage.used + amount
            statement = update(QuotaUsage).where(*key).values(
                used=_floor_zero(new_used), updated_at=stamp, exhausted=False,
                warned=QuotaUsage.warned if threshold is None or quota.kind is QuotaKind.periodic else (new_used >= threshold),
            )
        else:
            statement = update(QuotaUsage).where(*key).values(used=QuotaUsage.used + amount, updated_at=stamp)
            if limit is not None:
                statement = statement.where(QuotaUsage.used + amount <= limit)
        result = await session.execute(statement.returning(QuotaUsage.used).execution_options(synchronize_session=False))
        used = result.scalar_one_or_none()
        lift = state.catalog.lifting_plan(plan, quota_name, (used if used is not None else 0) + max(amount, 1))
        if used is None:  # refused: the limit would be passed
            current = (await session.execute(select(QuotaUsage.used).where(*key))).scalar_one()
            lift = state.catalog.lifting_plan(plan, quota_name, current + max(amount, 1))
            first = await session.execute(
                update(QuotaUsage).where(*key, QuotaUsage.exhausted.is_(False)).values(exhausted=True)
                .returning(QuotaUsage.used).execution_options(synchronize_session=False))
            if first.scalar_one_or_none() is not None:
                assert limit is not None
                await publish(kernel, session, QuotaExhausted(
                    tenant_id=tenant_id, quota=quota_name, period=period, used=current, limit=limit, plan=plan.code,
                    upgrade_to=lift.code if lift else None,
                ), key=f"quota-exhausted:{tenant_id}:{quota_name}:{period}:{plan.code}", tenant_id=tenant_id)
            return QuotaDecision(allowed=False, quota=quota_name, used=current, limit=limit, plan=plan.code,
                                 upgrade_to=lift.code if lift else None)
        if threshold is not None and used >= threshold and amount > 0:
            crossed = await session.execute(
                update(QuotaUsage).where(*key, QuotaUsage.warned.is_(False)).values(warned=True)
                .returning(QuotaUsage.used).execution_options(synchronize_session=False))
            if crossed.scalar_one_or_none() is not None:
                assert limit is not None
                lift = state.catalog.lifting_plan(plan, quota_name, limit + 1)
                await publish(kernel, session, QuotaWarning(
                    tenant_id=tenant_id, quota=quota_name, period=period, used=used, limit=limit, plan=plan.code,
                    upgrade_to=lift.code if lift else None,
                ), key=f"quota-warning:{tenant_id}:{quota_name}:{period}:{plan.code}", tenant_id=tenant_id)
        return QuotaDecision(allowed=True, quota=quota_name, used=used, limit=limit, plan=plan.code,
                             upgrade_to=lift.code if lift and limit is not None else None)


def _floor_zero(expression: Any) -> Any:
    from sqlalchemy import case

    return case((expression < 0, 0), else_=expression)


async def usage(kernel: Kernel, tenant_id: str) -> list[dict[str, Any]]:
    """Each quota's use in its current period, with the plan's limit."""
    plan = await plan_for(kernel, tenant_id)
    rows: dict[tuple[str, str], int] = {}
    if kernel.has_database():
        async with kernel.database().session(tenant_id=tenant_id) as session:
            keys = [(name, quota.period_key()) for name, quota in QUOTAS.items()]
            found = await session.execute(select(QuotaUsage.quota, QuotaUsage.period, QuotaUsage.used).where(
                QuotaUsage.tenant_id == tenant_id, QuotaUsage.quota.in_([name for name, _ in keys])))
            for quota_name, period, used in found:
                rows[(quota_name, period)] = used
    out = []
    for name, quota in QUOTAS.items():
        period = quota.period_key()
        out.append({"quota": name, "period": period, "used": rows.get((name, period), 0), "limit": plan.limit(name),
                    "description": quota.description})
    return out
