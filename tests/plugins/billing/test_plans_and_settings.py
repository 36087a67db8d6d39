"""Plans as data, money, settings, and the plugin without Stripe keys or storage."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from botcriptofy import ProblemError
from botcriptofy_billing import CATALOG, BillingPlugin, Money, sign
from botcriptofy_billing._signature import verify

from .conftest import WEBHOOK_SECRET, HeaderIdentity, billing_settings, tenant_headers

SPEC = {
    # code: (month, year, trial, bots, strategies, exchanges, api calls/month, rate/min, burst, orders/day, features?)
    "free": ("0.00", "0.00", 0, 1, 3, 1, 1_000, 30, 10, 10, False),
    "pro": ("29.00", "290.00", 14, 10, 50, 5, 100_000, 300, 60, 500, True),
    "enterprise": ("299.00", "2990.00", 30, None, None, None, 10_000_000, 3_000, 600, None, True),
    "internal": ("0.00", "0.00", 0, 50, 200, 10, 500_000, 300, 60, 2_000, True),
}


@pytest.mark.parametrize("code", sorted(SPEC))
def test_plans_match_the_specification(code):
    month, year, trial, bots, strategies, exchanges, calls, rate, burst, orders, features = SPEC[code]
    plan = CATALOG[code]
    assert plan.price("month") == Money.of(month, "BRL")
    assert plan.price("year") == Money.of(year, "BRL")
    assert plan.trial_days == trial
    assert (plan.limit("bots"), plan.limit("strategies"), plan.limit("exchanges")) == (bots, strategies, exchanges)
    assert plan.limit("api_calls_per_month") == calls
    assert (plan.limit("api_rate_per_minute"), plan.limit("api_burst")) == (rate, burst)
    assert plan.limit("orders_per_day") == orders
    assert (plan.features == {"ai_insights", "webhooks", "api_keys"}) is features


def test_only_pro_and_enterprise_are_sold_and_free_is_the_default():
    assert [plan.code for plan in CATALOG.sold] == ["pro", "enterprise"]
    assert CATALOG.default.code == "free"
    assert not CATALOG["internal"].sold


@pytest.mark.parametrize(("current", "quota", "needed", "lift"), [
    ("free", "bots", 2, "pro"),
    ("free", "orders_per_day", 501, "enterprise"),
    ("pro", "orders_per_day", 501, "enterprise"),
    ("pro", "api_calls_per_month", 100_001, "enterprise"),
    ("enterprise", "api_calls_per_month", 10_000_001, None),
    ("internal", "bots", 51, "enterprise"),
])
def test_the_lifting_plan_is_the_cheapest_sold_plan_that_allows_it(current, quota, needed, lift):
    found = CATALOG.lifting_plan(CATALOG[current], quota, needed)
    assert (found.code if found else None) == lift


def test_money_is_exact_and_keeps_its_currency():
    price = Money.of("29.00", "brl")
    assert price.amount_minor == 2900 and price.currency == "BRL" and price.amount == "29.00"
    assert Money.of("0.10", "BRL") * 3 == Money.of("0.30", "BRL")
    assert sum((Money.of("0.10", "BRL") for _ in range(10)), Money.zero("BRL")) == Money.of("1.00", "BRL")
    assert price.decimal == Decimal("29.00")
    assert str(Money.of("2990", "BRL")) == "BRL 2,990.00"
    with pytest.raises(ValueError, match="decimal places"):
        Money.of("0.001", "BRL")
    with pytest.raises(ValueError, match="BRL with USD"):
        price + Money.of("1.00", "USD")
    with pytest.raises(TypeError):
        price * 1.5  # type: ignore[operator]
    assert json.loads(price.model_dump_json()) == {"amount_minor": 2900, "currency": "BRL", "amount": "29.00"}
    assert Money.model_validate(json.loads(price.model_dump_json())) == price


# -- signatures ----------------------------------------------------------------------------------


def _event_body(event_id="evt_1"):
    return json.dumps({"id": event_id, "object": "event", "type": "customer.subscription.updated", "created": int(time.time()),
                       "data": {"object": {"id": "sub_1", "object": "subscription"}}})


def test_a_signature_made_as_stripe_makes_it_verifies():
    body = _event_body()
    event = verify(body.encode(), sign(body, WEBHOOK_SECRET), WEBHOOK_SECRET, 300)
    assert event["id"] == "evt_1"


@pytest.mark.parametrize(("header", "body_change", "detail"), [
    (None, None, "no Stripe-Signature header"),
    ("t=1,v1=", None, "signature"),
    ("garbage", None, "signature"),
    ("wrong-secret", None, "No signatures found matching"),
    ("stale", None, "more than 300 s old"),
    ("future", None, "in the future"),
    ("ok", b" ", "No signatures found matching"),
])
def test_unverifiable_deliveries_are_refused(header, body_change, detail):
    body = _event_body().encode()
    now = int(time.time())
    value = {
        None: None, "t=1,v1=": "t=1,v1=", "garbage": "garbage",
        "wrong-secret": sign(body, "whsec_other"), "stale": sign(body, WEBHOOK_SECRET, timestamp=now - 301),
        "future": sign(body, WEBHOOK_SECRET, timestamp=now + 301), "ok": sign(body, WEBHOOK_SECRET),
    }[header]
    with pytest.raises(ProblemError) as caught:
        verify(body + (body_change or b""), value, WEBHOOK_SECRET, 300)
    assert caught.value.status == 400
    assert detail in caught.value.detail


# -- the plugin without keys or storage -----------------------------------------------------------


async def test_plans_are_public_with_exact_prices(kernel_harness):
    harness = await kernel_harness(plugins={"billing": BillingPlugin()})
    response = await harness.client.get("/v1/billing/plans")
    assert response.status_code == 200
    plans = {plan["code"]: plan for plan in response.json()}
    assert set(plans) == {"free", "pro", "enterprise"}
    assert plans["pro"]["prices"]["month"] == {"amount_minor": 2900, "currency": "BRL", "amount": "29.00"}
    assert plans["enterprise"]["prices"]["year"]["amount"] == "2990.00"
    assert plans["enterprise"]["limits"]["bots"] is None
    assert plans["pro"]["trial_days"] == 14
    spec = (await harness.client.get("/openapi.json")).json()
    assert {"/v1/billing/plans", "/v1/billing/checkout", "/v1/billing/subscription", "/v1/billing/webhook",
            "/v1/billing/portal"} <= set(spec["paths"])


async def test_without_keys_the_plugin_starts_and_billing_answers_503(kernel_harness):
    harness = await kernel_harness(plugins={"billing": BillingPlugin(), "identity": HeaderIdentity()})
    assert "billing" in harness.kernel.plugins
    response = await harness.client.post("/v1/billing/checkout", json={"plan": "pro", "interval": "month"},
                                         headers=tenant_headers("t1"))
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "Billing not configured"
    response = await harness.client.post("/v1/billing/portal", headers=tenant_headers("t1"))
    assert response.status_code == 503
    body = _event_body()
    response = await harness.client.post("/v1/billing/webhook", content=body, headers={"Stripe-Signature": sign(body, WEBHOOK_SECRET)})
    assert response.status_code == 503
    unauthenticated = await harness.client.post("/v1/billing/checkout", json={"plan": "pro", "interval": "month"})
    assert unauthenticated.status_code == 401


async def test_forged_webhooks_are_400_before_anything_else(kernel_harness):
    harness = await kernel_harness(plugins={"billing": BillingPlugin()}, settings={"billing": billing_settings()})
    body = _event_body()
    for headers in ({}, {"Stripe-Signature": sign(body, "whsec_forged")},
                    {"Stripe-Signature": sign(body, WEBHOOK_SECRET, timestamp=int(time.time()) - 3600)}):
        response = await harness.client.post("/v1/billing/webhook", content=body, headers=headers)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "https://botcriptofy.dev/problems/webhook-signature"


async def test_without_storage_every_tenant_gets_free_entitlements(kernel_harness):
    harness = await kernel_harness(plugins={"billing": BillingPlugin()})
    entitlements = await harness.kernel.entitlements("t1")
    assert entitlements.plan == "free"
    assert entitlements.limits["api_rate_per_minute"] == 30 and entitlements.limits["api_burst"] == 10
    assert entitlements.features == frozenset()


async def test_live_settings_reconfigure_and_keys_restart(kernel_harness):
    harness = await kernel_harness(plugins={"billing": BillingPlugin()}, settings={"billing": billing_settings()})
    result = await harness.apply({"billing": billing_settings(webhook_tolerance=60, success_url="https://app.example/ok")})
    assert result.applied and result.changes["reconfigured"] == ["billing"]
    result = await harness.apply({"billing": billing_settings(webhook_tolerance=60, secret_key="sk_test_other")})
    assert result.applied and result.changes["restarted"] == ["billing"]
    result = await harness.apply({"billing": {"webhook_tolerance": 0}})
    assert not result.applied and "billing.webhook_tolerance" in result.error


def test_secret_key_comes_from_the_environment(tmp_path, monkeypatch):
    from botcriptofy import Runtime

    (tmp_path / "settings.toml").write_text("[default.kernel]\nstate_dir = '%s'\n" % (tmp_path / "var"))
    monkeypatch.setenv("BOTCRIPTOFY_BILLING__SECRET_KEY", "sk_test_from_env")
    monkeypatch.setenv("BOTCRIPTOFY_BILLING__WEBHOOK_SECRET", "whsec_from_env")
    runtime = Runtime(tmp_path, plugins={"billing": BillingPlugin()}, discover=False, watch=False)
    runtime.plugins = runtime.scan()
    from botcriptofy._settings import load

    valid = runtime.validate(load(tmp_path, "testing"))
    settings = valid.plugins["billing"]
    assert settings.secret_key.get_secret_value() == "sk_test_from_env"
    assert settings.webhook_secret.get_secret_value() == "whsec_from_env"
    assert "sk_test_from_env" not in repr(settings)
