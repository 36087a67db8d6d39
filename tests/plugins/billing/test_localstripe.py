"""Against a real Stripe-compatible server (localstripe) through the official stripe client.

Prices, Checkout Sessions and portal sessions, which localstripe lacks, are answered by recorded
responses in Stripe's documented shapes (see ``RecordedStripe`` in conftest); everything else is the
real server, including signed webhook delivery to the app served over HTTP.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from botcriptofy import ProblemError
from botcriptofy.testing import wait_until
from botcriptofy_billing import plugin as installed_plugin

from .conftest import SECRET_KEY, WEBHOOK_SECRET, RecordedStripe, checkout_completed_obj, event_obj, tenant_headers


async def _sync(env) -> dict[str, str]:
    """Run sync-plans through the plugin's gateway; return lookup key -> price id."""
    from botcriptofy_billing._state import state_of

    actions = await state_of(env.kernel).stripe().sync_plans(state_of(env.kernel).catalog)
    return {a.key: a.stripe_id for a in actions if a.kind == "price"}


async def _complete_checkout(env, tenant: str, *, card: str = "pm_card_visa") -> tuple[str, str]:
    """Play Stripe's hosted Checkout page: attach a card and create the subscription the session describes."""
    (session_id, recorded), = env.recorder.checkout_sessions.items()
    params = recorded["params"]
    client = env.stripe_client()
    customer = params["customer"]
    method = await client.v1.payment_methods.attach_async(card, {"customer": customer})
    await client.v1.customers.update_async(customer, {"invoice_settings": {"default_payment_method": method["id"]}})
    subscription = await client.v1.subscriptions.create_async({
        "customer": customer,
        "items": [{"plan": params["line_items"][0]["price"]}],  # localstripe takes the price id as the plan id, as Stripe does
        "metadata": params["subscription_data"]["metadata"],
    })
    env.recorder.checkout_sessions.clear()
    return session_id, subscription["id"]


def test_sync_plans_command_is_idempotent(localstripe, tmp_path, monkeypatch):
    """``botcriptofy billing sync-plans``: products in localstripe, prices by lookup key; a second run changes nothing."""
    from botcriptofy._cli import cli
    from botcriptofy._manager import discover

    recorder = RecordedStripe(forward_to=localstripe.url)
    monkeypatch.setattr(installed_plugin, "stripe_http_client", recorder.client)
    others = sorted(name for name in discover() if name != "billing")
    (tmp_path / "settings.toml").write_text(
        f"[default.kernel]\nstate_dir = '{tmp_path / 'var'}'\n[default.plugins]\ndisabled = {json.dumps(others)}\n"
        f"[default.billing]\napi_base = '{localstripe.url}'\nmax_network_retries = 0\n")
    monkeypatch.setenv("BOTCRIPTOFY_BILLING__SECRET_KEY", SECRET_KEY)
    installed_plugin.register_commands(cli=cli)
    runner = CliRunner()
    first = runner.invoke(cli, ["--settings", str(tmp_path), "billing", "sync-plans"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "6 objects checked, 6 changed" in first.output
    products = {p["id"]: p for p in localstripe.call("GET", "/v1/products")["data"]}
    assert set(products) == {"botcriptofy_pro", "botcriptofy_enterprise"}
    assert products["botcriptofy_pro"]["metadata"] == {"botcriptofy_plan": "pro"}
    prices = {p["lookup_key"]: p for p in recorder.prices.values()}
    assert {key: (p["unit_amount"], p["currency"], p["recurring"]["interval"]) for key, p in prices.items()} == {
        "botcriptofy_pro_month": (2900, "brl", "month"), "botcriptofy_pro_year": (29000, "brl", "year"),
        "botcriptofy_enterprise_month": (29900, "brl", "month"), "botcriptofy_enterprise_year": (299000, "brl", "year"),
    }
    second = runner.invoke(cli, ["--settings", str(tmp_path), "billing", "sync-plans"], catch_exceptions=False)
    assert second.exit_code == 0 and "6 objects checked, 0 changed" in second.output, second.output
    assert len(recorder.prices) == 4

    listing = runner.invoke(cli, ["--settings", str(tmp_path), "billing", "plans", "--json"])
    assert {row["code"] for row in json.loads(listing.output)} == {"free", "pro", "internal", "enterprise"}


async def test_checkout_portal_upgrade_cancel_and_reactivate(make_billing, localstripe):
    env = await make_billing(localstripe=localstripe)
    prices = await _sync(env)
    response = await env.client.post("/v1/billing/checkout", json={"plan": "pro", "interval": "month"}, headers=tenant_headers("t-1"))
    assert response.status_code == 200, response.text
    assert response.json()["url"].startswith("https://checkout.stripe.com/")
    (_, recorded), = env.recorder.checkout_sessions.items()
    params = recorded["params"]
    assert params["mode"] == "subscription" and params["client_reference_id"] == "t-1"
    assert params["line_items"] == [{"price": prices["botcriptofy_pro_month"], "quantity": "1"}]
    assert params["subscription_data"]["trial_period_days"] == "14"
    assert params["subscription_data"]["metadata"] == {"tenant_id": "t-1", "botcriptofy_plan": "pro", "botcriptofy_interval": "month"}
    customer = localstripe.call("GET", f"/v1/customers/{params['customer']}")
    assert customer["metadata"] == {"tenant_id": "t-1"} and customer["email"] == "t-1@example.test"

    session_id, sub_id = await _complete_checkout(env, "t-1")
    completed = event_obj("checkout.session.completed", checkout_completed_obj(session_id, customer=params["customer"],
                                                                                 subscription=sub_id, tenant="t-1"))
    assert (await env.post_event(completed)).json()["outcome"] == "applied"
    shown = (await env.client.get("/v1/billing/subscription", headers=tenant_headers("t-1"))).json()
    assert (shown["plan"], shown["status"], shown["subscription_id"]) == ("pro", "active", sub_id)
    assert shown["current_period_end"] is not None

    again = await env.client.post("/v1/billing/checkout", json={"plan": "enterprise"}, headers=tenant_headers("t-1"))
    assert again.status_code == 409

    portal = await env.client.post("/v1/billing/portal", headers=tenant_headers("t-1"))
    assert portal.status_code == 200 and portal.json()["url"].startswith("https://billing.stripe.com/")

    upgraded = await env.client.post("/v1/billing/subscription/change", json={"plan": "enterprise", "interval": "month"},
                                     headers=tenant_headers("t-1"))
    assert upgraded.status_code == 200, upgraded.text
    assert upgraded.json()["plan"] == "enterprise"
    sent = [c for c in env.recorder.calls if c.method == "POST" and c.path == f"/v1/subscriptions/{sub_id}"]
    assert sent[-1].params["proration_behavior"] == "create_prorations"
    assert sent[-1].params["items"][0]["price"] == prices["botcriptofy_enterprise_month"]
    remote = localstripe.call("GET", f"/v1/subscriptions/{sub_id}")
    assert remote["plan"]["id"] == prices["botcriptofy_enterprise_month"]
    proration = [item for item in localstripe.call("GET", f"/v1/invoiceitems?customer={params['customer']}")["data"] if item["proration"]]
    assert proration and proration[0]["amount"] == -2900  # the unused Pro time is credited
    assert (await env.kernel.entitlements("t-1")).plan == "enterprise"

    downgraded = await env.client.post("/v1/billing/subscription/change", json={"plan": "pro", "interval": "month"},
                                       headers=tenant_headers("t-1"))
    assert downgraded.status_code == 200 and downgraded.json()["plan"] == "pro"

    canceled = await env.client.post("/v1/billing/subscription/cancel", headers=tenant_headers("t-1"))
    assert canceled.status_code == 200 and canceled.json()["cancel_at_period_end"] is True
    assert localstripe.call("GET", f"/v1/subscriptions/{sub_id}")["cancel_at_period_end"] is True
    assert (await env.kernel.entitlements("t-1")).plan == "pro"  # until the period ends
    reactivated = await env.client.post("/v1/billing/subscription/reactivate", headers=tenant_headers("t-1"))
    assert reactivated.status_code == 200 and reactivated.json()["cancel_at_period_end"] is False
    assert localstripe.call("GET", f"/v1/subscriptions/{sub_id}")["cancel_at_period_end"] is False


async def test_stripe_errors_are_problems_not_500(make_billing, localstripe):
    env = await make_billing(localstripe=localstripe)
    # No sync-plans yet: no price has the lookup key.
    response = await env.client.post("/v1/billing/checkout", json={"plan": "pro"}, headers=tenant_headers("t-2"))
    assert response.status_code == 503 and "sync-plans" in response.json()["detail"]
    localstripe.reset()
    env.recorder.forward_to = "http://127.0.0.1:9"  # nothing listens: Stripe unreachable
    response = await env.client.post("/v1/billing/checkout", json={"plan": "pro"}, headers=tenant_headers("t-3"))
    assert response.status_code == 502 and response.headers["content-type"] == "application/problem+json"


async def _signup(client: Any, email: str) -> dict[str, str]:
    response = await client.post("/v1/auth/signup", json={"email": email, "password": "correct horse battery staple",
                                                          "name": "Ana Trader", "account_type": "trader"})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['tokens']['access_token']}"}


async def test_full_flow_with_auth_and_webhooks_from_localstripe(make_billing, localstripe, serve_app, outbox_events):
    """With the real auth plugin: sign up -> checkout -> webhooks -> Pro -> payment fails -> past_due -> final failure -> Free."""
    import botcriptofy_auth

    env = await make_billing(localstripe=localstripe, settings={"trials": False}, extra_plugins={"auth": botcriptofy_auth})
    await _full_flow(env, localstripe, serve_app, outbox_events, identity="auth")


async def test_full_flow_with_a_test_identity_and_webhooks_from_localstripe(make_billing, localstripe, serve_app, outbox_events):
    """The same flow with the test identity plugin, so billing's part is checked apart from auth's."""
    env = await make_billing(localstripe=localstripe, settings={"trials": False})
    await _full_flow(env, localstripe, serve_app, outbox_events, identity="header")


async def _full_flow(env, localstripe, serve_app, outbox_events, *, identity: str) -> None:
    import httpx

    app = await serve_app(env.harness)
    localstripe.register_webhook(f"{app.url}/v1/billing/webhook", WEBHOOK_SECRET)
    prices = await _sync(env)
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        if identity == "auth":
            from botcriptofy_auth._accounts import mark_email_verified

            auth = await _signup(http, "ana@example.test")
            # Paid checkout needs a verified address (the link's own flow is tested with the auth plugin).
            assert await mark_email_verified(env.harness.kernel, email="ana@example.test", by="test")
            tenant = (await http.get("/v1/me", headers=auth)).json()["tenant"]["id"]
        else:
            tenant = "t-flow"
            auth = tenant_headers(tenant)
        me = (await http.get("/v1/billing/subscription", headers=auth)).json()
        assert me["plan"] == "free" and me["status"] == "none"

        checkout = await http.post("/v1/billing/checkout", json={"plan": "pro", "interval": "month"}, headers=auth)
        assert checkout.status_code == 200, checkout.text
        session_id, sub_id = await _complete_checkout(env, tenant)
        customer = localstripe.call("GET", f"/v1/subscriptions/{sub_id}")["customer"]
        completed = event_obj("checkout.session.completed", checkout_completed_obj(session_id, customer=customer, subscription=sub_id,
                                                                                     tenant=tenant))
        assert (await env.post_event(completed, client=http)).status_code == 200

        async def status() -> str:
            return (await http.get("/v1/billing/subscription", headers=auth)).json()["status"]

        await wait_until(lambda: _is(status, "active"), timeout=10)
        # localstripe's own signed deliveries (customer.subscription.created, invoice.payment_succeeded) arrive too:
        await wait_until(lambda: _events(env, outbox_events, "billing.payment_succeeded", 1), timeout=10)
        assert (await env.kernel.entitlements(tenant)).plan == "pro"
        for _ in range(2):  # Free allows 1 bot; Pro allows 10
            assert (await env.kernel.consume_quota(tenant, "bots")).allowed

        # The card starts failing; moving to yearly billing makes localstripe invoice now, and the charge fails:
        # localstripe marks the subscription past_due but sends no invoice.payment_failed, so the test delivers that
        # event for localstripe's real invoice, in Stripe's shape and signed as Stripe signs.
        client = env.stripe_client()
        failing = await client.v1.payment_methods.attach_async("pm_card_chargeCustomerFail", {"customer": customer})
        await client.v1.customers.update_async(customer, {"invoice_settings": {"default_payment_method": failing["id"]}})
        item = localstripe.call("GET", f"/v1/subscriptions/{sub_id}")["items"]["data"][0]["id"]
        await client.v1.subscriptions.update_async(sub_id, {"items": [{"id": item, "plan": prices["botcriptofy_pro_year"]}]})
        assert localstripe.call("GET", f"/v1/subscriptions/{sub_id}")["status"] == "past_due"
        invoice = next(i for i in localstripe.call("GET", f"/v1/invoices?subscription={sub_id}")["data"] if i["status"] == "open")
        assert (await env.post_event(event_obj("invoice.payment_failed", invoice), client=http)).status_code == 200
        await wait_until(lambda: _is(status, "past_due"), timeout=10)
        assert (await env.kernel.entitlements(tenant)).plan == "pro"  # Stripe retries: Pro meanwhile
        failures = await outbox_events(env.kernel, "billing.payment_failed")
        assert failures and failures[-1]["payload"]["tenant_id"] == tenant

        await client.v1.subscriptions.cancel_async(sub_id)  # what Stripe does after the last retry fails
        await wait_until(lambda: _is(status, "canceled"), timeout=10)
        shown = (await http.get("/v1/billing/subscription", headers=auth)).json()
        assert shown["plan"] == "free" and shown["subscription_id"] == sub_id
        with pytest.raises(ProblemError, match="quota"):
            await env.kernel.consume_quota(tenant, "bots")  # 2 bots kept, Free allows 1: no new one
        usage = {row["quota"]: row["used"] for row in (await http.get("/v1/billing/usage", headers=auth)).json()}
        assert usage["bots"] == 2  # the tenant's data is kept
        plans = [(c["payload"]["previous_plan"], c["payload"]["plan"])
                 for c in await outbox_events(env.kernel, "billing.subscription_changed")]
        assert plans[0] == ("free", "pro") and plans[-1] == ("pro", "free")


async def _is(status, wanted: str) -> bool:
    return (await status()) == wanted


async def _events(env, outbox_events, kind: str, count: int) -> bool:
    return len(await outbox_events(env.kernel, kind)) >= count
