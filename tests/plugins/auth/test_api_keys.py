"""API keys: scoped, expiring, shown once, stored as a keyed hash, last use recorded, revocable."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from botcriptofy import Route, hookimpl, require
from botcriptofy.testing import wait_until
from botcriptofy_auth._accounts import approve_influencer
from botcriptofy_auth._models import ApiKey
from botcriptofy_auth._util import now

from .conftest import Billing, Recorder, bearer, signup, verify


class Guarded:
    """A test plugin with routes that need permissions, as other plugins declare them."""

    @hookimpl
    def register_routes(self, kernel):
        async def trade(request):
            actor = await require(request, "trading:write")
            return {"actor": actor.id, "kind": actor.kind, "tenant": actor.tenant_id}

        async def read(request):
            return {"ok": True}

        return [Route("/v1/test/trade", trade, methods=["POST"]), Route("/v1/test/read", read, permission="trading:read")]


async def _influencer(harness, email="bot-owner@example.com"):
    # Approved influencers have the Internal plan, which includes API keys (SPEC §5); Free does not.
    body = await signup(harness.client, email, account_type="influencer", name="Owner")
    await verify(harness, email)  # unverified accounts cannot create keys
    await approve_influencer(harness.kernel, body["tenant"]["id"], by="test")
    return body["tokens"]["access_token"]


async def test_create_use_list_and_revoke(make_auth):
    recorder = Recorder()
    harness = await make_auth(plugins={"guarded": Guarded(), "recorder": recorder}, apikey_touch_interval=0)
    token = await _influencer(harness)
    created = await harness.client.post(
        "/v1/auth/api-keys", headers=bearer(token), json={"name": "grid bot", "scopes": ["trading:read"], "expires_in_days": 30}
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    key = created.json()
    assert key["key"].startswith(f"bcf_{key['prefix']}_") and key["scopes"] == ["trading:read"]
    assert key["expires_at"] > key["created_at"]

    # Stored only as a keyed hash.
    async with harness.kernel.database().session(system=True) as session:
        row = await session.get(ApiKey, key["id"])
        assert row.key_hash != key["key"] and key["key"] not in row.key_hash and len(row.key_hash) == 64
        assert row.last_used_at is None

    assert (await harness.client.get("/v1/test/read", headers={"X-API-Key": key["key"]})).status_code == 200
    assert (await harness.client.get("/v1/test/read", headers=bearer(key["key"]))).status_code == 200
    # The key carries only its scopes, though its owner may trade.
    refused = await harness.client.post("/v1/test/trade", headers={"X-API-Key": key["key"]})
    assert refused.status_code == 403 and "trading:write" in refused.json()["detail"]
    assert (await harness.client.post("/v1/test/trade", headers=bearer(token))).status_code == 200
    me = (await harness.client.get("/v1/me", headers={"X-API-Key": key["key"]})).json()
    assert me["auth"] == "api_key" and me["permissions"] == ["trading:read"]

    listed = (await harness.client.get("/v1/auth/api-keys", headers=bearer(token))).json()
    assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0]
    assert listed[0]["last_used_at"] is not None  # recorded

    assert (await harness.client.delete(f"/v1/auth/api-keys/{key['id']}", headers=bearer(token))).status_code == 204
    revoked = await harness.client.get("/v1/test/read", headers={"X-API-Key": key["key"]})
    assert revoked.status_code == 401 and revoked.json()["type"].endswith("/api-key-revoked")
    await wait_until(lambda: recorder.of("auth.api_key_created") and recorder.of("auth.api_key_revoked"))


async def test_scopes_cannot_exceed_the_owner(make_auth):
    harness = await make_auth()
    token = await _influencer(harness)
    response = await harness.client.post("/v1/auth/api-keys", headers=bearer(token), json={"name": "x", "scopes": ["finance:*"]})
    assert response.status_code == 403 and response.json()["errors"][0]["field"] == "scopes"
    response = await harness.client.post("/v1/auth/api-keys", headers=bearer(token), json={"name": "x", "scopes": ["*"]})
    assert response.status_code == 422
    response = await harness.client.post("/v1/auth/api-keys", headers=bearer(token), json={"name": "x", "scopes": []})
    assert response.status_code == 422
    response = await harness.client.post(
        "/v1/auth/api-keys", headers=bearer(token), json={"name": "x", "scopes": ["trading:read"], "expires_in_days": 3000}
    )
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "expires_in_days"
    # A key without apikeys:* cannot mint more keys.
    key = (await harness.client.post("/v1/auth/api-keys", headers=bearer(token), json={"name": "x", "scopes": ["trading:read"]})).json()
    minted = await harness.client.post(
        "/v1/auth/api-keys", headers={"X-API-Key": key["key"]}, json={"name": "y", "scopes": ["trading:read"]}
    )
    assert minted.status_code == 403


async def test_free_plan_has_no_api_keys_and_billing_decides_when_present(make_auth):
    harness = await make_auth()
    free = (await signup(harness.client, "free@example.com"))["tokens"]["access_token"]
    await verify(harness, "free@example.com")
    response = await harness.client.post("/v1/auth/api-keys", headers=bearer(free), json={"name": "x", "scopes": ["trading:read"]})
    assert response.status_code == 403 and response.json()["upgrade_to"] == "pro" and "Free" in response.json()["detail"].title()
    paid = await make_auth(plugins={"billing": Billing("pro")})
    token = (await signup(paid.client, "paid@example.com"))["tokens"]["access_token"]
    await verify(paid, "paid@example.com")
    assert (
        await paid.client.post("/v1/auth/api-keys", headers=bearer(token), json={"name": "x", "scopes": ["trading:read"]})
    ).status_code == 201


async def test_expired_and_unknown_keys(make_auth):
    harness = await make_auth(plugins={"guarded": Guarded()})
    token = await _influencer(harness)
    key = (await harness.client.post("/v1/auth/api-keys", headers=bearer(token), json={"name": "x", "scopes": ["trading:read"]})).json()
    async with harness.kernel.database().session(system=True) as session:
        await session.execute(sa.update(ApiKey).where(ApiKey.id == key["id"]).values(expires_at=now() - timedelta(seconds=1)))
    await harness.kernel.cache().invalidate_tags(f"auth:apikey:{key['id']}")
    expired = await harness.client.get("/v1/test/read", headers={"X-API-Key": key["key"]})
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    for bogus in ("bcf_000000000000_" + "A" * 43, "nonsense", key["key"][:-1] + ("A" if key["key"][-1] != "A" else "B")):
        response = await harness.client.get("/v1/test/read", headers={"X-API-Key": bogus})
        assert response.status_code == 401 and response.headers["content-type"] == "application/problem+json"


async def test_a_stolen_database_cannot_authenticate(make_auth):
    """Copying key_hash out of the database gives nothing to send: the pepper is not in the database."""
    harness = await make_auth(plugins={"guarded": Guarded()})
    token = await _influencer(harness)
    key = (await harness.client.post("/v1/auth/api-keys", headers=bearer(token), json={"name": "x", "scopes": ["trading:read"]})).json()
    async with harness.kernel.database().session(system=True) as session:
        stored = (await session.get(ApiKey, key["id"])).key_hash
    for attempt in (stored, f"bcf_{key['prefix']}_{stored[:43]}"):
        assert (await harness.client.get("/v1/test/read", headers={"X-API-Key": attempt})).status_code == 401
