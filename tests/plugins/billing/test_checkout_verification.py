"""Paid checkout needs a verified e-mail: the kernel's ``email_verified`` actor attribute, whoever the identity plugin is."""

from __future__ import annotations

from .conftest import tenant_headers
from .test_localstripe import _sync


async def test_an_unverified_caller_cannot_reach_paid_checkout(make_billing, localstripe):
    env = await make_billing(localstripe=localstripe)
    await _sync(env)
    refused = await env.client.post(
        "/v1/billing/checkout",
        json={"plan": "pro", "interval": "month"},
        headers={**tenant_headers("t-u"), "X-Test-Email-Verified": "false"},
    )
    assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["reason"] == "email_not_verified" and problem["type"].endswith("/email-not-verified")
    assert "/v1/auth/email/verify/resend" in problem["detail"]
    assert env.recorder.checkout_sessions == {}  # nothing reached Stripe

    verified = await env.client.post(
        "/v1/billing/checkout",
        json={"plan": "pro", "interval": "month"},
        headers={**tenant_headers("t-u"), "X-Test-Email-Verified": "true"},
    )
    assert verified.status_code == 200, verified.text
    assert len(env.recorder.checkout_sessions) == 1
    # An identity plugin that does not tell (no attribute) is not refused.
    env.recorder.checkout_sessions.clear()
    other = await env.client.post("/v1/billing/checkout", json={"plan": "pro", "interval": "month"}, headers=tenant_headers("t-v"))
    assert other.status_code == 200, other.text
