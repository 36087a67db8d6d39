"""Billing's /payments and /subscription and auth's /user through the staff bot, against the local Bot API server.

Real Update JSON in polling mode; invoices and subscriptions arrive as signed Stripe webhooks; SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import time

from botcriptofy.testing import wait_until
from botcriptofy_billing import BillingPlugin, sign

from .conftest import PASSWORD, ask, link

WEBHOOK_SECRET = "whsec_test_telegram"
# Stripe keys so the webhook is on; these events never make billing call Stripe (invoices name no subscription).
BILLING = {"secret_key": "sk_test_telegram", "webhook_secret": WEBHOOK_SECRET, "max_network_retries": 0, "api_base": "http://127.0.0.1:9"}


async def bot_with_billing(make_bot_kernel):
    return await make_bot_kernel(plugins={"billing": BillingPlugin()}, billing=BILLING)


def event_obj(kind, obj, *, created):
    return {"id": f"evt_{kind}_{obj['id']}_{created}", "object": "event", "created": created, "type": kind, "data": {"object": obj}}


def subscription_obj(sub_id, *, customer, tenant, trial_end):
    """A trialing Pro subscription in Stripe's documented shape (only the fields billing reads, and a few more)."""
    price = {
        "id": "price_pro_month",
        "object": "price",
        "currency": "brl",
        "lookup_key": "botcriptofy_pro_month",
        "metadata": {"botcriptofy_plan": "pro", "botcriptofy_interval": "month"},
        "recurring": {"interval": "month"},
    }
    item = {"id": f"si_{sub_id}", "object": "subscription_item", "price": price, "quantity": 1, "current_period_end": trial_end}
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": "trialing",
        "currency": "brl",
        "cancel_at_period_end": False,
        "canceled_at": None,
        "ended_at": None,
        "trial_end": trial_end,
        "metadata": {"tenant_id": tenant, "botcriptofy_plan": "pro"},
        "items": {"object": "list", "data": [item]},
    }


def invoice_obj(invoice_id, *, customer, amount, created):
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer,
        "currency": "brl",
        "amount_due": amount,
        "amount_paid": 0,
        "attempt_count": 1,
        "status": "open",
        "next_payment_attempt": created + 86400,
        "created": created,
        "parent": None,
    }


async def post_event(harness, event):
    body = json.dumps(event)
    headers = {"Stripe-Signature": sign(body, WEBHOOK_SECRET), "Content-Type": "application/json"}
    response = await harness.client.post("/v1/billing/webhook", content=body, headers=headers)
    assert response.status_code == 200, response.text


async def test_payments_and_subscription_in_telegram(make_bot_kernel, botapi):
    harness = await bot_with_billing(make_bot_kernel)
    signup = await harness.client.post(
        "/v1/auth/signup", json={"email": "ana@example.com", "password": PASSWORD, "name": "Ana", "account_type": "trader"}
    )
    tenant = signup.json()["tenant"]["id"]
    now = int(time.time())
    subscription = subscription_obj("sub_a", customer="cus_a", tenant=tenant, trial_end=now + 5 * 86400)
    await post_event(harness, event_obj("customer.subscription.created", subscription, created=now - 10))
    invoice = invoice_obj("in_a", customer="cus_a", amount=12990, created=now - 6)
    await post_event(harness, event_obj("invoice.payment_failed", invoice, created=now - 5))

    await link(harness, botapi, "fin@example.com", 501, {"finance": "viewer"})
    await link(harness, botapi, "sac@example.com", 502, {"support": "manager"})

    payments = await ask(botapi, 501, "/payments ana@example.com 5")
    assert payments.splitlines()[0] == f"Tenant {tenant}: últimas 1 faturas"
    assert "in_a BRL 129.90 — falhou, 1 tentativa(s)" in payments
    english = await ask(botapi, 501, f"/payments who={tenant}", language="en")
    assert english.splitlines()[0] == f"Tenant {tenant}: last 1 invoices" and "failed, 1 attempt(s)" in english
    day = time.strftime("%Y-%m-%d", time.gmtime(now + 5 * 86400))
    subscription = await ask(botapi, 501, f"/subscription {tenant}")
    assert f"Plano: Pro (pro)\nStatus: trialing\nFim do período: {day}\nTeste: até {day}" in subscription
    assert await ask(botapi, 501, "/subscription nobody@example.com") == (
        "Nenhuma conta ativa com esse e-mail. Use o id do tenant (/user mostra o de uma conta bloqueada)."
    )

    # Usage lines for bad arguments, refusals for people without billing:read.
    assert await ask(botapi, 501, "/payments") == "Uso: /payments &lt;who&gt; [limit]"
    assert await ask(botapi, 501, "/payments ana@example.com 500") == "Uso: /payments &lt;who&gt; [limit]"
    assert await ask(botapi, 501, "/subscription a@b", language="en") == "Usage: /subscription &lt;who&gt;"
    assert await ask(botapi, 502, "/payments ana@example.com") == "Sem permissão para /payments."
    assert await ask(botapi, 502, "/subscription ana@example.com", language="en") == "You may not run /subscription."

    helped = await ask(botapi, 501, "/help")
    assert "/payments &lt;who&gt; [limit] — Faturas e pagamentos recentes de um tenant (id ou e-mail)" in helped
    assert "/subscription &lt;who&gt; — Plano, status, fim do período e teste de um tenant" in helped
    assert "/payments" not in await ask(botapi, 502, "/help")

    def menu(chat_id, language):
        calls = [
            c for c in botapi.of("setMyCommands") if c.params["scope"].get("chat_id") == chat_id and c.params["language_code"] == language
        ]
        return {item["command"]: item["description"] for item in calls[-1].params["commands"]} if calls else {}

    await wait_until(lambda: "payments" in menu(501, "en") and "subscription" in menu(501, "en"), timeout=10)
    assert menu(501, "en")["subscription"] == "A tenant's plan, status, period end and trial"
    assert "payments" not in menu(502, "en")


async def test_user_lookup_in_telegram_masks_pii_for_viewers(make_bot_kernel, botapi):
    harness = await make_bot_kernel()
    await harness.client.post(
        "/v1/auth/signup", json={"email": "bia.lima@example.com", "password": PASSWORD, "name": "Bia Lima", "account_type": "trader"}
    )
    await link(harness, botapi, "viewer@example.com", 601, {"support": "viewer"})
    await link(harness, botapi, "member@example.com", 602, {"security": "member"})
    await link(harness, botapi, "fin@example.com", 603, {"finance": "manager"})

    masked = await ask(botapi, 601, "/user Bia.Lima@example.com")
    assert masked.splitlines()[0] == "B*** L*** &lt;b***@e***.com&gt;"
    assert "bia.lima" not in masked and "Dados pessoais mascarados (falta users:pii)." in masked and "Status: active" in masked
    full = await ask(botapi, 602, "/user bia.lima@example.com", language="en")
    assert full.splitlines()[0] == "Bia Lima &lt;bia.lima@example.com&gt;" and "E-mail verified: no" in full and "masked" not in full
    staff = await ask(botapi, 602, "/user viewer@example.com", language="en")
    assert "Roles: support=viewer" in staff and "Last login:" in staff

    assert await ask(botapi, 603, "/user bia.lima@example.com") == "Sem permissão para /user."
    assert await ask(botapi, 601, "/user") == "Uso: /user &lt;email&gt;"
    assert await ask(botapi, 601, "/user not-an-address") == "Uso: /user &lt;email&gt;"
    assert await ask(botapi, 601, "/user nobody@example.com", language="en") == "No account has that e-mail."
