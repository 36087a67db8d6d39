"""Entitlements and quotas on SQLite and PostgreSQL: warning at 80 %, refusal at 100 % naming the lifting plan."""

from __future__ import annotations

import asyncio

import pytest

from botcriptofy import ProblemError

from .conftest import event_obj, subscription_obj, tenant_headers


async def test_quota_warns_once_at_80_percent_and_refuses_at_100(make_billing, outbox_events):
    env = await make_billing()
    kernel = env.kernel
    for used in range(1, 8):  # Free: 10 orders per day
        decision = await kernel.consume_quota("t-q", "orders_per_day")
        assert decision.allowed and decision.used == used and decision.limit == 10 and decision.plan == "free"
    assert await outbox_events(kernel, "billing.quota_warning") == []
    eighth = await kernel.consume_quota("t-q", "orders_per_day")
    assert eighth.used == 8
    warnings = await outbox_events(kernel, "billing.quota_warning")
    assert len(warnings) == 1
    assert warnings[0]["payload"] | {"period": "-"} == {"tenant_id": "t-q", "quota": "orders_per_day", "period": "-", "used": 8,
                                                       "limit": 10, "plan": "free", "upgrade_to": "pro"}
    await kernel.consume_quota("t-q", "orders_per_day")
    tenth = await kernel.consume_quota("t-q", "orders_per_day")
    assert tenth.allowed and tenth.used == 10

    with pytest.raises(ProblemError) as refused:
        await kernel.consume_quota("t-q", "orders_per_day")
    problem = refused.value.to_dict()
    assert problem["status"] == 403
    assert problem["quota"] == "orders_per_day" and problem["plan"] == "free" and problem["upgrade_to"] == "pro"
    assert "orders_per_day" in problem["detail"] and "pro plan lifts it" in problem["detail"]
    with pytest.raises(ProblemError):
        await kernel.consume_quota("t-q", "orders_per_day")
    assert len(await outbox_events(kernel, "billing.quota_warning")) == 1
    assert len(await outbox_events(kernel, "billing.quota_exhausted")) == 1
    usage = {row["quota"]: row for row in (await env.client.get("/v1/billing/usage", headers=tenant_headers("t-q"))).json()}
    assert usage["orders_per_day"]["used"] == 10 and usage["orders_per_day"]["limit"] == 10


async def test_an_upgrade_lifts_the_limit_and_tenants_are_separate(make_billing):
    env = await make_billing()
    kernel = env.kernel
    assert (await kernel.consume_quota("t-u", "bots")).used == 1
    with pytest.raises(ProblemError) as refused:
        await kernel.consume_quota("t-u", "bots")
    assert refused.value.extensions["upgrade_to"] == "pro"
    assert (await kernel.consume_quota("t-other", "bots")).allowed  # another tenant's count is its own

    await env.post_event(event_obj("customer.subscription.created",
                                   subscription_obj("sub_u", customer="cus_u", status="active", tenant="t-u")))
    entitlements = await kernel.entitlements("t-u")
    assert entitlements.plan == "pro" and entitlements.limits["api_rate_per_minute"] == 300 and entitlements.limits["api_burst"] == 60
    assert "webhooks" in entitlements.features
    decision = await kernel.consume_quota("t-u", "bots")
    assert decision.allowed and decision.used == 2 and decision.limit == 10 and decision.plan == "pro"
    released = await kernel.consume_quota("t-u", "bots", -5)
    assert released.allowed and released.used == 0


async def test_concurrent_consumption_never_passes_the_limit(make_billing):
    env = await make_billing()
    results = await asyncio.gather(*(env.kernel.consume_quota("t-c", "orders_per_day") for _ in range(15)), return_exceptions=True)
    allowed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, ProblemError)]
    assert len(allowed) == 10 and len(refused) == 5, results
    assert sorted(r.used for r in allowed) == list(range(1, 11))


async def test_unlimited_and_unknown_quotas(make_billing):
    env = await make_billing()
    await env.post_event(event_obj("customer.subscription.created",
                                   subscription_obj("sub_e", customer="cus_e", status="active", tenant="t-e", plan="enterprise")))
    decision = await env.kernel.consume_quota("t-e", "orders_per_day", 5000)
    assert decision.allowed and decision.limit is None and decision.upgrade_to is None
    assert await env.kernel.consume_quota("t-e", "no_such_quota") is None


async def test_influencers_get_the_internal_plan_and_no_billing(make_billing):
    env = await make_billing()
    forbidden = await env.client.post("/v1/billing/admin/assign", json={"tenant_id": "t-i", "plan": "internal"},
                                      headers=tenant_headers("staff"))
    assert forbidden.status_code == 403
    assigned = await env.client.post("/v1/billing/admin/assign", json={"tenant_id": "t-i", "plan": "internal"},
                                     headers=tenant_headers("staff", "subscriptions:manage"))
    assert assigned.status_code == 200 and assigned.json()["plan"] == "internal"
    entitlements = await env.kernel.entitlements("t-i")
    assert entitlements.plan == "internal" and entitlements.limits["orders_per_day"] == 2000
    checkout = await env.client.post("/v1/billing/checkout", json={"plan": "pro"}, headers=tenant_headers("t-i"))
    assert checkout.status_code == 403
    not_sold = await env.client.post("/v1/billing/checkout", json={"plan": "internal"}, headers=tenant_headers("t-x"))
    assert not_sold.status_code == 422
