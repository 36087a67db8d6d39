"""A leaked API key leaves no copies: keys mint keys only with the dedicated scope, and those keys die with their parent."""

from __future__ import annotations

from .conftest import bearer
from .test_api_keys import _influencer


async def _key(harness, headers, scopes, name="k"):
    return await harness.client.post("/v1/auth/api-keys", headers=headers, json={"name": name, "scopes": scopes})


async def test_a_key_without_the_mint_scope_cannot_create_keys(make_auth):
    harness = await make_auth()
    token = await _influencer(harness)
    wide = (await _key(harness, bearer(token), ["apikeys:*", "trading:read"])).json()
    refused = await _key(harness, {"X-API-Key": wide["key"]}, ["trading:read"])
    assert refused.status_code == 403 and refused.json()["type"].endswith("/api-key-cannot-mint")
    assert "apikeys:mint" in refused.json()["detail"]
    assert len((await harness.client.get("/v1/auth/api-keys", headers=bearer(token))).json()) == 1


async def test_keys_minted_by_a_key_are_revoked_with_it(make_auth):
    harness = await make_auth()
    token = await _influencer(harness)
    parent = (await _key(harness, bearer(token), ["apikeys:mint", "apikeys:create", "trading:read"], "parent")).json()
    child = await _key(harness, {"X-API-Key": parent["key"]}, ["apikeys:mint", "apikeys:create", "trading:read"], "child")
    assert child.status_code == 201, child.text
    grandchild = await _key(harness, {"X-API-Key": child.json()["key"]}, ["trading:read"], "grandchild")
    assert grandchild.status_code == 201
    # A key cannot hand out more than it holds.
    wider = await _key(harness, {"X-API-Key": parent["key"]}, ["trading:write"])
    assert wider.status_code == 403
    sibling = (await _key(harness, bearer(token), ["trading:read"], "sibling")).json()
    for credential in (parent, child.json(), grandchild.json(), sibling):
        assert (await harness.client.get("/v1/me", headers={"X-API-Key": credential["key"]})).status_code == 200

    assert (await harness.client.delete(f"/v1/auth/api-keys/{parent['id']}", headers=bearer(token))).status_code == 204
    for credential in (parent, child.json(), grandchild.json()):
        response = await harness.client.get("/v1/me", headers={"X-API-Key": credential["key"]})
        assert response.status_code == 401 and response.json()["type"].endswith("/api-key-revoked")
    assert (await harness.client.get("/v1/me", headers={"X-API-Key": sibling["key"]})).status_code == 200
    listed = {k["name"]: k for k in (await harness.client.get("/v1/auth/api-keys", headers=bearer(token))).json()}
    assert all(listed[name]["revoked_at"] for name in ("parent", "child", "grandchild")) and not listed["sibling"]["revoked_at"]
