"""Influencer sign-ups: Free and pending until the marketing department approves them; billing then assigns Internal."""

from __future__ import annotations

import pytest

from botcriptofy.testing import wait_until
from botcriptofy_billing import BillingPlugin

from .conftest import STRONG_PASSWORD, Recorder, bearer, login, signup, verify
from .test_permissions import _admin, _staff


async def test_self_registered_influencers_get_no_internal_quotas_until_marketing_approves(make_auth):
    recorder = Recorder()
    harness = await make_auth(plugins={"recorder": recorder, "billing": BillingPlugin()})
    body = await signup(harness.client, "influ@example.com", account_type="influencer", name="Bia Influencer")
    tenant_id, token = body["tenant"]["id"], body["tokens"]["access_token"]
    assert body["tenant"]["plan"] == "free" and body["tenant"]["review"] == "pending"
    await verify(harness, "influ@example.com")
    await wait_until(lambda: recorder.of("auth.user_signed_up"))
    # The sign-up alone moves nothing: the billing plugin still answers Free and API keys are refused.
    assert (await harness.kernel.entitlements(tenant_id)).plan == "free"
    me = (await harness.client.get("/v1/me", headers=bearer(token))).json()
    assert me["plan"]["name"] == "free" and me["tenant"]["review"] == "pending"
    refused = await harness.client.post("/v1/auth/api-keys", headers=bearer(token), json={"name": "k", "scopes": ["trading:read"]})
    assert refused.status_code == 403 and refused.json()["plan"] == "free"

    admin = await _admin(harness)
    support = await _staff(harness, admin, "sup@botcriptofy.example", {"support": "manager"})
    viewer = await _staff(harness, admin, "mktv@botcriptofy.example", {"marketing": "viewer"})
    member = await _staff(harness, admin, "mkt@botcriptofy.example", {"marketing": "member"})
    pending = (await harness.client.get("/v1/admin/influencers?review=pending", headers=bearer(viewer))).json()
    assert [(p["tenant"]["id"], p["users"]) for p in pending] == [(tenant_id, ["influ@example.com"])]
    approve = f"/v1/admin/influencers/{tenant_id}/approve"
    assert (await harness.client.post(approve, headers=bearer(support))).status_code == 403
    assert (await harness.client.post(approve, headers=bearer(viewer))).status_code == 403
    approved = await harness.client.post(approve, headers=bearer(member))
    assert approved.status_code == 200, approved.text
    assert approved.json()["plan"] == "internal" and approved.json()["review"] == "approved"
    assert (await harness.client.post(approve, headers=bearer(member))).status_code == 409

    await wait_until(lambda: recorder.of("auth.influencer_approved"))
    event = recorder.of("auth.influencer_approved")[0]
    assert event["tenant_id"] == tenant_id and event["plan"] == "internal" and event["user_ids"] == [body["user"]["id"]]

    async def billed_internal() -> bool:
        return (await harness.kernel.entitlements(tenant_id)).plan == "internal"

    await wait_until(billed_internal)
    created = await harness.client.post("/v1/auth/api-keys", headers=bearer(token), json={"name": "k", "scopes": ["trading:read"]})
    assert created.status_code == 201, created.text
    assert (await harness.client.get("/v1/admin/influencers?review=pending", headers=bearer(viewer))).json() == []


@pytest.mark.parametrize("target", ["trader", "unknown"])
async def test_only_influencer_tenants_can_be_approved(make_auth, target):
    harness = await make_auth()
    admin = await _admin(harness)
    member = await _staff(harness, admin, "mkt@botcriptofy.example", {"marketing": "member"})
    if target == "trader":
        tenant_id = (await signup(harness.client, "t@example.com"))["tenant"]["id"]
    else:
        tenant_id = "00000000-0000-4000-8000-000000000000"
    assert (await harness.client.post(f"/v1/admin/influencers/{tenant_id}/approve", headers=bearer(member))).status_code == 404
    assert (await login(harness.client, "mkt@botcriptofy.example", STRONG_PASSWORD)).status_code == 200
