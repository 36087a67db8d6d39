"""Webhooks on SQLite and PostgreSQL: verified, processed once, applied in the object's order, published through the outbox.

These events are built in Stripe's documented shapes (localstripe sends neither trials nor
``customer.subscription.updated``) and signed with Stripe's scheme.
"""

from __future__ import annotations

import asyncio
import json
import time

from sqlalchemy import func, select

from botcriptofy_billing._models import Subscription, WebhookEvent

from .conftest import event_obj, invoice_obj, subscription_obj, tenant_headers


async def _count(kernel, model):
    async with kernel.database().session(system=True) as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_trial_subscription_lifecycle(make_billing, outbox_events):
    env = await make_billing()
    trial_end = int(time.time()) + 14 * 86400
    created = event_obj("customer.subscription.created",
                        subscription_obj("sub_trial", customer="cus_a", status="trialing", tenant="t-a", trial_end=trial_end,
                                         period_end=trial_end))
    response = await env.post_event(created)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "duplicate": False, "event": created["id"], "outcome": "applied"}

    shown = (await env.client.get("/v1/billing/subscription", headers=tenant_headers("t-a"))).json()
    assert shown["plan"] == "pro" and shown["status"] == "trialing" and shown["interval"] == "month"
    assert shown["trial_end"] is not None and shown["cancel_at_period_end"] is False
    assert (await env.kernel.entitlements("t-a")).limits["bots"] == 10

    ending = event_obj("customer.subscription.trial_will_end",
                       subscription_obj("sub_trial", customer="cus_a", status="trialing", tenant="t-a", trial_end=trial_end,
                                         period_end=trial_end))
    assert (await env.post_event(ending)).status_code == 200
    active = event_obj("customer.subscription.updated", subscription_obj("sub_trial", customer="cus_a", status="active", tenant="t-a"),
                       created=int(time.time()) + 1)
    assert (await env.post_event(active)).json()["outcome"] == "applied"
    assert (await env.client.get("/v1/billing/subscription", headers=tenant_headers("t-a"))).json()["status"] == "active"

    changes = await outbox_events(env.kernel, "billing.subscription_changed")
    assert [(c["payload"]["previous_status"], c["payload"]["status"]) for c in changes] == [(None, "trialing"), ("trialing", "active")]
    assert changes[0]["payload"]["plan"] == "pro" and changes[0]["payload"]["previous_plan"] == "free"
    trial = await outbox_events(env.kernel, "billing.trial_ending")
    assert len(trial) == 1 and trial[0]["payload"]["tenant_id"] == "t-a"


async def test_replayed_event_is_processed_once(make_billing, outbox_events):
    env = await make_billing()
    event = event_obj("customer.subscription.created", subscription_obj("sub_r", customer="cus_r", status="active", tenant="t-r"))
    first = await env.post_event(event)
    second = await env.post_event(event)
    assert first.json()["duplicate"] is False
    assert second.status_code == 200 and second.json()["duplicate"] is True
    assert len(await outbox_events(env.kernel, "billing.subscription_changed")) == 1
    assert await _count(env.kernel, WebhookEvent) == 1


async def test_concurrent_deliveries_of_one_event_are_processed_once(make_billing, outbox_events):
    env = await make_billing()
    event = event_obj("customer.subscription.created", subscription_obj("sub_c", customer="cus_c", status="active", tenant="t-c"))
    responses = await asyncio.gather(*(env.post_event(event) for _ in range(8)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert sorted(r.json()["duplicate"] for r in responses) == [False] + [True] * 7
    assert len(await outbox_events(env.kernel, "billing.subscription_changed")) == 1
    assert await _count(env.kernel, WebhookEvent) == 1


async def test_out_of_order_events_keep_the_newest_state(make_billing):
    env = await make_billing()
    base = int(time.time())
    created = event_obj("customer.subscription.created", subscription_obj("sub_o", customer="cus_o", status="incomplete", tenant="t-o"),
                        created=base)
    updated = event_obj("customer.subscription.updated", subscription_obj("sub_o", customer="cus_o", status="active", tenant="t-o"),
                        created=base + 5)
    assert (await env.post_event(updated)).json()["outcome"] == "applied"
    assert (await env.post_event(created)).json()["outcome"] == "stale"
    show = (await env.client.get("/v1/billing/subscription", headers=tenant_headers("t-o"))).json()
    assert show["status"] == "active" and show["plan"] == "pro"

    deleted = event_obj("customer.subscription.deleted",
                        subscription_obj("sub_o", customer="cus_o", status="canceled", tenant="t-o", canceled_at=base + 20),
                        created=base + 20)
    late_update = event_obj("customer.subscription.updated",
                            subscription_obj("sub_o", customer="cus_o", status="active", tenant="t-o", cancel_at_period_end=True),
                            created=base + 15)
    assert (await env.post_event(deleted)).json()["outcome"] == "applied"
    assert (await env.post_event(late_update)).json()["outcome"] == "stale"
    show = (await env.client.get("/v1/billing/subscription", headers=tenant_headers("t-o"))).json()
    assert show["status"] == "canceled" and show["plan"] == "free"


async def test_forged_or_stale_events_store_nothing(make_billing):
    env = await make_billing()
    event = event_obj("customer.subscription.created", subscription_obj("sub_f", customer="cus_f", status="active", tenant="t-f"))
    forged = await env.post_event(event, secret="whsec_attacker")
    stale = await env.post_event(event, timestamp=int(time.time()) - 301)
    unsigned = await env.client.post("/v1/billing/webhook", content=json.dumps(event))
    for response in (forged, stale, unsigned):
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
    assert await _count(env.kernel, WebhookEvent) == 0
    assert await _count(env.kernel, Subscription) == 0
    assert (await env.kernel.entitlements("t-f")).plan == "free"


async def test_dunning_past_due_then_final_failure_falls_back_to_free(make_billing, outbox_events):
    env = await make_billing()
    base = int(time.time())
    await env.post_event(event_obj("customer.subscription.created",
                                   subscription_obj("sub_d", customer="cus_d", status="active", tenant="t-d"), created=base))
    assert (await env.kernel.entitlements("t-d")).plan == "pro"

    retry_at = base + 3 * 86400
    failed = event_obj("invoice.payment_failed", invoice_obj("in_d", customer="cus_d", subscription="sub_d", amount=2900, paid=False,
                                                             attempt_count=1, next_payment_attempt=retry_at), created=base + 1)
    past_due = event_obj("customer.subscription.updated",
                         subscription_obj("sub_d", customer="cus_d", status="past_due", tenant="t-d"), created=base + 1)
    assert (await env.post_event(failed)).status_code == 200
    assert (await env.post_event(past_due)).status_code == 200
    show = (await env.client.get("/v1/billing/subscription", headers=tenant_headers("t-d"))).json()
    assert show["status"] == "past_due" and show["plan"] == "pro"  # Pro keeps working while Stripe retries

    final = event_obj("invoice.payment_failed", invoice_obj("in_d", customer="cus_d", subscription="sub_d", amount=2900, paid=False,
                                                            attempt_count=4, next_payment_attempt=None), created=base + 2)
    assert (await env.post_event(final)).status_code == 200
    assert (await env.kernel.entitlements("t-d")).plan == "free"
    unpaid = event_obj("customer.subscription.updated", subscription_obj("sub_d", customer="cus_d", status="unpaid", tenant="t-d"),
                       created=base + 3)
    assert (await env.post_event(unpaid)).status_code == 200
    show = (await env.client.get("/v1/billing/subscription", headers=tenant_headers("t-d"))).json()
    assert show["plan"] == "free" and show["status"] == "unpaid" and show["subscription_id"] == "sub_d"  # the data is kept

    failures = await outbox_events(env.kernel, "billing.payment_failed")
    assert [(f["payload"]["attempt_count"], f["payload"]["final"]) for f in failures] == [(1, False), (4, True)]
    assert failures[0]["payload"]["amount_due"] == {"amount_minor": 2900, "currency": "BRL", "amount": "29.00"}
    plans = [(c["payload"]["previous_plan"], c["payload"]["plan"]) for c in await outbox_events(env.kernel, "billing.subscription_changed")]
    assert plans[0] == ("free", "pro") and ("pro", "free") in plans

    paid = event_obj("invoice.paid", invoice_obj("in_d2", customer="cus_d", subscription="sub_d", amount=2900, paid=True),
                     created=base + 4)
    recovered = event_obj("customer.subscription.updated", subscription_obj("sub_d", customer="cus_d", status="active", tenant="t-d"),
                          created=base + 4)
    await env.post_event(paid)
    await env.post_event(recovered)
    assert (await env.kernel.entitlements("t-d")).plan == "pro"
    assert len(await outbox_events(env.kernel, "billing.payment_succeeded")) == 1


async def test_unknown_events_are_recorded_and_ignored(make_billing):
    env = await make_billing()
    event = event_obj("customer.created", {"id": "cus_x", "object": "customer"})
    response = await env.post_event(event)
    assert response.status_code == 200 and response.json()["outcome"] == "ignored"
    assert (await env.post_event(event)).json()["duplicate"] is True
