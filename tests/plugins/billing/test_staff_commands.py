"""Billing's staff commands over ``POST /v1/staff/commands/{name}``: /payments and /subscription, on SQLite and PostgreSQL.

The kernel runs storage, auth (real staff and a real trader), notifications (the command registry's
HTTP face) and billing; invoices and subscriptions arrive as signed Stripe webhooks.
"""

from __future__ import annotations

import time

import pytest

import botcriptofy_auth
import botcriptofy_notifications
import botcriptofy_storage
from botcriptofy_auth._accounts import create_staff
from botcriptofy_billing import BillingPlugin

from .conftest import RecordedStripe, billing_settings, event_obj, invoice_obj, subscription_obj

PASSWORD = "correct horse battery staple"
FAST_HASH = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}


@pytest.fixture
async def staff_billing(kernel_harness, make_postgres_database, database_url):
    recorder = RecordedStripe(forward_to=None)
    plugins = {
        "storage": botcriptofy_storage,
        "auth": botcriptofy_auth,
        "notifications": botcriptofy_notifications,
        "billing": BillingPlugin(stripe_http_client=recorder.client),
    }
    settings = {
        "storage": {"url": database_url, "relay_poll_interval": 0.05},
        "auth": FAST_HASH,
        "notifications": {"poll_interval": 0.05},
        "billing": billing_settings(api_base="http://recorded.invalid"),
    }
    return await kernel_harness(plugins=plugins, settings=settings)


async def post_event(harness, event):
    import json

    from botcriptofy_billing import sign

    from .conftest import WEBHOOK_SECRET

    body = json.dumps(event)
    response = await harness.client.post(
        "/v1/billing/webhook", content=body, headers={"Stripe-Signature": sign(body, WEBHOOK_SECRET), "Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def staff_headers(harness, email, roles):
    await create_staff(harness.kernel, email=email, name="Staff", password=PASSWORD, roles=roles, by="test")
    response = await harness.client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def trader(harness, email):
    signup = await harness.client.post(
        "/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "Trader", "account_type": "trader"}
    )
    assert signup.status_code == 201, signup.text
    return signup.json()["tenant"]["id"]


async def run(harness, headers, name, locale="pt-BR", **arguments):
    return await harness.client.post(f"/v1/staff/commands/{name}", headers=headers, json={"arguments": arguments, "locale": locale})


async def test_payments_lists_a_tenants_invoices_newest_first_by_tenant_or_email(staff_billing):
    harness = staff_billing
    tenant = await trader(harness, "Ana@Example.com")
    finance = await staff_headers(harness, "fin@example.com", {"finance": "viewer"})
    base = int(time.time()) - 3 * 86400
    await post_event(
        harness,
        event_obj(
            "customer.subscription.created", subscription_obj("sub_1", customer="cus_1", status="active", tenant=tenant), created=base
        ),
    )
    first = invoice_obj("in_1", customer="cus_1", subscription="sub_1", amount=2900, paid=True)
    first["created"], first["number"] = base, "BCF-0001"
    await post_event(harness, event_obj("invoice.paid", first, created=base))
    second = invoice_obj(
        "in_2", customer="cus_1", subscription="sub_1", amount=2900, paid=False, attempt_count=2, next_payment_attempt=base + 5 * 86400
    )
    second["created"] = base + 86400
    failed = event_obj("invoice.payment_failed", second, created=base + 86400 + 60)
    await post_event(harness, failed)
    stale = event_obj("invoice.payment_failed", {**second, "attempt_count": 1}, created=base + 86400)  # older, arrives late
    await post_event(harness, stale)

    by_email = await run(harness, finance, "payments", who="ana@example.com")
    assert by_email.status_code == 200, by_email.text
    data = by_email.json()["data"]
    assert data["tenant_id"] == tenant
    assert [(i["id"], i["status"], i["attempt_count"]) for i in data["invoices"]] == [("in_2", "payment_failed", 2), ("in_1", "paid", 1)]
    assert data["invoices"][1]["amount_paid"] == {"amount_minor": 2900, "currency": "BRL", "amount": "29.00"}
    text = by_email.json()["text"]
    assert text.splitlines()[0] == f"Tenant {tenant}: últimas 2 faturas"
    assert "in_2 BRL 29.00 — falhou, 2 tentativa(s)" in text and "BCF-0001 BRL 29.00 — paga em" in text

    by_tenant = await run(harness, finance, "payments", locale="en", who=tenant, limit=1)
    assert [i["id"] for i in by_tenant.json()["data"]["invoices"]] == ["in_2"]
    assert "failed, 2 attempt(s)" in by_tenant.json()["text"]

    # Paid later: the newest event wins.
    paid = {**second, "amount_paid": 2900, "status": "paid"}
    await post_event(harness, event_obj("invoice.paid", paid, created=base + 2 * 86400))
    again = (await run(harness, finance, "payments", who=tenant)).json()["data"]["invoices"]
    assert again[0]["status"] == "paid" and again[0]["paid_at"] is not None

    unknown = await run(harness, finance, "payments", who="nobody@example.com")
    assert unknown.status_code == 200 and unknown.json()["data"] == {"found": False}
    empty = await run(harness, finance, "payments", locale="en", who="t-without-invoices")
    assert empty.json()["text"] == "Tenant t-without-invoices: no invoices on record."


async def test_subscription_shows_plan_status_period_end_and_trial(staff_billing):
    harness = staff_billing
    tenant = await trader(harness, "bia@example.com")
    subscriptions = await staff_headers(harness, "subs@example.com", {"subscriptions": "viewer"})
    free = (await run(harness, subscriptions, "subscription", locale="en", who="bia@example.com")).json()
    assert free["data"]["plan"] == "free" and free["data"]["status"] == "none" and free["data"]["in_trial"] is False

    trial_end = int(time.time()) + 10 * 86400
    await post_event(
        harness,
        event_obj(
            "customer.subscription.created",
            subscription_obj("sub_t", customer="cus_t", status="trialing", tenant=tenant, trial_end=trial_end, period_end=trial_end),
        ),
    )
    shown = await run(harness, subscriptions, "subscription", locale="en", who=tenant)
    assert shown.status_code == 200, shown.text
    data = shown.json()["data"]
    assert (data["plan"], data["status"], data["in_trial"], data["subscription_id"]) == ("pro", "trialing", True, "sub_t")
    day = time.strftime("%Y-%m-%d", time.gmtime(trial_end))
    assert data["trial_end"].startswith(day) and data["current_period_end"].startswith(day)
    lines = shown.json()["text"].splitlines()
    assert lines[1].startswith("Plan: Pro") and lines[2] == "Status: trialing" and lines[3] == f"Period ends: {day}"
    assert lines[4] == f"Trial: until {day}"

    await post_event(
        harness,
        event_obj(
            "customer.subscription.updated",
            subscription_obj("sub_t", customer="cus_t", status="active", tenant=tenant, cancel_at_period_end=True),
            created=int(time.time()) + 1,
        ),
    )
    pt = (await run(harness, subscriptions, "subscription", who=tenant)).json()
    assert pt["data"]["status"] == "active" and pt["data"]["cancel_at_period_end"] is True
    assert "Status: active (cancela no fim do período)" in pt["text"] and "Teste: não" in pt["text"]


async def test_refusals_listing_and_usage_lines(staff_billing):
    harness = staff_billing
    await trader(harness, "caio@example.com")
    support = await staff_headers(harness, "sac@example.com", {"support": "manager"})
    finance = await staff_headers(harness, "fin@example.com", {"finance": "viewer"})

    for name in ("payments", "subscription"):
        refused = await run(harness, support, name, who="caio@example.com")
        assert refused.status_code == 403 and "billing:read" in refused.json()["detail"]
    listed = {c["name"]: c for c in (await harness.client.get("/v1/staff/commands", headers=finance)).json()}
    assert {"payments", "subscription"} <= set(listed)
    assert listed["payments"]["usage"] == "/payments <who> [limit]" and listed["payments"]["permission"] == "billing:read"
    assert listed["payments"]["description"] == "Faturas e pagamentos recentes de um tenant (id ou e-mail)"
    english = {c["name"]: c for c in (await harness.client.get("/v1/staff/commands", headers={**finance, "Accept-Language": "en"})).json()}
    assert english["subscription"]["description"] == "A tenant's plan, status, period end and trial"
    assert "payments" not in {c["name"] for c in (await harness.client.get("/v1/staff/commands", headers=support)).json()}

    for arguments, field in (({}, "who"), ({"who": "not an e-mail@"}, "who"), ({"who": "a@b.co", "limit": 0}, "limit")):
        bad = await run(harness, finance, "payments", **arguments)
        assert bad.status_code == 422, bad.text
        assert bad.json()["errors"][0]["field"] == field and "Usage: /payments <who> [limit]" in bad.json()["detail"]
    assert (await run(harness, finance, "subscription", who="x" * 80)).status_code == 422
    assert (await harness.client.post("/v1/staff/commands/payments", json={"arguments": {"who": "t"}})).status_code == 401
