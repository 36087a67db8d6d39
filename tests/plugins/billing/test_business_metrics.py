"""Billing's business figures (``business_metrics``), refunds from ``charge.refunded``, and pausing dunning, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from botcriptofy import ApprovalRequest, ProblemError
from botcriptofy_billing._dunning import PAUSE_ACTION, REMINDER_ACTIVITY, approval_actions, contributions, paused_until

from .conftest import event_obj, invoice_obj, subscription_obj

DAY = 86400


def charge_obj(charge_id: str, *, customer: str, amount: int, refunded: int) -> dict:
    return {
        "id": charge_id,
        "object": "charge",
        "customer": customer,
        "amount": amount,
        "amount_refunded": refunded,
        "currency": "brl",
        "refunded": refunded >= amount,
        "paid": True,
        "status": "succeeded",
        "livemode": False,
        "created": int(time.time()) - DAY,
        "metadata": {},
    }


async def _post(env, kind, obj, *, created=None):
    response = await env.post_event(event_obj(kind, obj, created=created))
    assert response.status_code == 200, response.text
    return response.json()["outcome"]


async def _figures(kernel, since, until):
    merged: dict[str, int] = {}
    for figures in (await kernel.broadcast("business_metrics", kernel=kernel, since=since, until=until)).values():
        merged.update(figures or {})
    return merged


async def test_business_metrics_count_the_window(make_billing, outbox_events):
    env = await make_billing()
    now = int(time.time())
    subscriptions = [
        subscription_obj("sub_a", customer="cus_a", status="active", tenant="t-a"),  # pro monthly: 2900
        subscription_obj("sub_y", customer="cus_y", status="active", tenant="t-y", plan="enterprise", interval="year"),  # 299000/12
        subscription_obj("sub_t", customer="cus_t", status="trialing", tenant="t-t", trial_end=now + 2 * DAY),
        subscription_obj("sub_l", customer="cus_l", status="trialing", tenant="t-l", trial_end=now + 5 * DAY),
        subscription_obj("sub_p", customer="cus_p", status="past_due", tenant="t-p"),  # pro monthly: 2900
        subscription_obj("sub_c", customer="cus_c", status="canceled", tenant="t-c", canceled_at=now - 3600),
        subscription_obj("sub_o", customer="cus_o", status="canceled", tenant="t-o", canceled_at=now - 20 * DAY),
    ]
    for sub in subscriptions:
        assert await _post(env, "customer.subscription.created", sub) == "applied"
    assert await _post(env, "invoice.paid", invoice_obj("in_1", customer="cus_a", subscription=None, amount=2900, paid=True)) == "recorded"
    old = invoice_obj("in_old", customer="cus_y", subscription=None, amount=299000, paid=True)
    assert await _post(env, "invoice.paid", old, created=now - 10 * DAY) == "recorded"
    failed = invoice_obj("in_2", customer="cus_p", subscription=None, amount=2900, paid=False, next_payment_attempt=now + DAY)
    assert await _post(env, "invoice.payment_failed", failed) == "recorded"

    # Refunds: a partial one, then the rest; a late copy of the partial one adds nothing.
    partial = event_obj("charge.refunded", charge_obj("ch_1", customer="cus_a", amount=2900, refunded=1000), created=now - 60)
    assert (await env.post_event(partial)).json()["outcome"] == "refunded"
    assert await _post(env, "charge.refunded", charge_obj("ch_1", customer="cus_a", amount=2900, refunded=2900)) == "refunded"
    late = event_obj("charge.refunded", charge_obj("ch_1", customer="cus_a", amount=2900, refunded=1000), created=now - 30)
    assert (await env.post_event(late)).json()["outcome"] == "stale"
    stranger = charge_obj("ch_x", customer="cus_nobody", amount=100, refunded=100)
    assert await _post(env, "charge.refunded", stranger) == "unknown_tenant"
    refunded = await outbox_events(env.kernel, "billing.refunded")
    assert [(r["payload"]["amount"]["amount_minor"], r["payload"]["full"]) for r in refunded] == [(1000, False), (1900, True)]

    until = datetime.now(UTC) + timedelta(seconds=5)
    week = await _figures(env.kernel, until - timedelta(days=7), until)
    assert week == {
        "payments_succeeded": 1,
        "payments_failed": 1,
        "revenue_cents": 2900,
        "refunds": 2,
        "refunds_cents": 2900,
        "trials_started": 2,
        "trials_converted": 0,
        "trials_ending_3d": 1,
        "subscriptions_active": 2,
        "subscriptions_trialing": 2,
        "subscriptions_past_due": 1,
        "subscriptions_canceled": 1,
        "mrr_cents": 2900 + round(299000 / 12) + 2900,
    }
    month = await _figures(env.kernel, until - timedelta(days=30), until)
    assert (month["payments_succeeded"], month["revenue_cents"], month["subscriptions_canceled"]) == (2, 2900 + 299000, 2)
    before = await _figures(env.kernel, until - timedelta(days=60), until - timedelta(days=30))
    # Nothing existed yet: no subscription was recorded before the window's end.
    assert before["subscriptions_active"] == 0 and before["mrr_cents"] == 0 and before["payments_succeeded"] == 0


async def test_a_converted_trial_counts_once_its_trial_ended(make_billing):
    env = await make_billing()
    now = int(time.time())
    trial = subscription_obj("sub_v", customer="cus_v", status="trialing", tenant="t-v", trial_end=now - 60)
    assert await _post(env, "customer.subscription.created", trial, created=now - 100) == "applied"
    converted = subscription_obj("sub_v", customer="cus_v", status="active", tenant="t-v", trial_end=now - 60)
    assert await _post(env, "customer.subscription.updated", converted, created=now - 50) == "applied"
    until = datetime.now(UTC) + timedelta(seconds=5)
    figures = await _figures(env.kernel, until - timedelta(days=1), until)
    assert (figures["trials_started"], figures["trials_converted"], figures["subscriptions_trialing"]) == (1, 1, 0)


def _approval(approval_id: str, payload: dict) -> ApprovalRequest:
    stamp = datetime.now(UTC)
    return ApprovalRequest(
        id=approval_id,
        action=PAUSE_ACTION,
        summary="pause",
        department="finance",
        permission="billing:dunning",
        requester="service:agent_finance",
        expires_at=stamp + timedelta(days=1),
        created_at=stamp,
        payload=payload,
        status="approved",
        decided_by="user:finance-manager",
    )


async def test_an_approved_pause_holds_dunning_reminders(make_billing):
    env = await make_billing()
    kernel = env.kernel
    (action,) = approval_actions(kernel)
    assert action.name == PAUSE_ACTION
    assert await paused_until(kernel, "t-a") is None
    only_b = await action.execute(_approval("ap-1", {"hours": 2, "tenant_id": "t-b", "reason": "card processor outage"}))
    assert only_b["tenant_id"] == "t-b"
    assert await paused_until(kernel, "t-a") is None and await paused_until(kernel, "t-b") is not None
    remind = next(c for c in contributions(kernel) if c.name == REMINDER_ACTIVITY)
    held = await remind.execute({"tenant_id": "t-b", "invoice_id": "in_9", "hours": 24, "amount_due": {}})
    assert held["paused_until"] and "reminded" not in held
    sent = await remind.execute({"tenant_id": "t-a", "invoice_id": "in_8", "hours": 24, "amount_due": {}})
    assert sent == {"reminded": "t-a", "hours": 24}
    everyone = await action.execute(_approval("ap-2", {"hours": 24}))
    again = await action.execute(_approval("ap-2", {"hours": 48}))  # a retried try changes nothing
    assert again == everyone and everyone["tenant_id"] is None
    ends = await paused_until(kernel, "t-a")
    assert ends is not None and abs(ends - (time.time() + 24 * 3600)) < 60
    with pytest.raises(ProblemError) as refused:
        await action.execute(_approval("ap-3", {"hours": 500}))
    assert refused.value.status == 422 and "hours" in refused.value.detail
