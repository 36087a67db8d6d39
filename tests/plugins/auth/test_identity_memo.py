"""The per-worker memo of resolved credentials: no second verification, and every invalidation holds at once."""

from __future__ import annotations

from typing import Any

from botcriptofy_auth._accounts import approve_influencer, change_staff_roles, mark_email_verified
from botcriptofy_auth._state import state_of
from botcriptofy_billing import BillingPlugin
from botcriptofy_billing._service import assign

from .conftest import signup

KEY = {"name": "bot", "scopes": ["trading:read"]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def count_verifications(harness: Any) -> list[str]:
    state = state_of(harness.kernel)
    seen: list[str] = []
    original = state.keyring.verify

    def verify(token: str, **kwargs: Any) -> Any:
        seen.append(token)
        return original(token, **kwargs)

    state.keyring.verify = verify  # type: ignore[method-assign]
    return seen


async def test_a_known_token_is_served_from_the_memo_and_a_logout_ends_it_on_the_next_request(make_auth):
    harness = await make_auth()
    token = (await signup(harness.client, "memo@example.com"))["tokens"]["access_token"]
    seen = count_verifications(harness)
    for _ in range(3):
        assert (await harness.client.get("/v1/me", headers=bearer(token))).status_code == 200
    assert len(seen) == 1  # verified once; the two later requests came from the memo
    assert token in state_of(harness.kernel).resolved

    assert (await harness.client.post("/v1/auth/logout", headers=bearer(token))).status_code == 204
    refused = await harness.client.get("/v1/me", headers=bearer(token))
    assert refused.status_code == 401 and refused.json()["type"].endswith("/session-revoked")
    assert token not in state_of(harness.kernel).resolved


async def test_a_memoized_api_key_revoked_is_refused_on_the_next_request(make_auth):
    harness = await make_auth()
    signed = await signup(harness.client, "keys@example.com", account_type="influencer")
    await approve_influencer(harness.kernel, signed["tenant"]["id"], by="test")  # the Internal plan includes API keys
    await mark_email_verified(harness.kernel, email="keys@example.com", by="test")
    token = signed["tokens"]["access_token"]
    created = await harness.client.post("/v1/auth/api-keys", headers=bearer(token), json=KEY)
    assert created.status_code == 201, created.text
    key = created.json()
    for _ in range(2):
        me = await harness.client.get("/v1/me", headers={"X-API-Key": key["key"]})
        assert me.status_code == 200 and me.json()["auth"] == "api_key"
    assert key["key"] in state_of(harness.kernel).resolved
    assert (await harness.client.delete(f"/v1/auth/api-keys/{key['id']}", headers=bearer(token))).status_code == 204
    refused = await harness.client.get("/v1/me", headers={"X-API-Key": key["key"]})
    assert refused.status_code == 401 and refused.json()["type"].endswith("/api-key-revoked")


async def test_role_and_plan_changes_show_on_the_next_request_of_a_memoized_caller(make_auth):
    harness = await make_auth(plugins={"billing": BillingPlugin()})
    # A role change: the staff member's cached caller is dropped by tag, so the memo stops answering.
    from botcriptofy_auth._accounts import create_staff

    staff = await create_staff(
        harness.kernel, email="ops@example.com", name="Ops", password="correct horse battery staple", roles={"support": "viewer"}
    )
    login = await harness.client.post("/v1/auth/login", json={"email": "ops@example.com", "password": "correct horse battery staple"})
    staff_token = login.json()["access_token"]
    before = (await harness.client.get("/v1/me", headers=bearer(staff_token))).json()
    assert (await harness.client.get("/v1/me", headers=bearer(staff_token))).json() == before  # memo and cached body
    await change_staff_roles(harness.kernel, company_id=staff.tenant_id, user_id=staff.id, roles={"support": "manager"}, by="test")
    after = (await harness.client.get("/v1/me", headers=bearer(staff_token))).json()
    assert after["roles"] == {"support": "manager"} and set(after["permissions"]) > set(before["permissions"])

    # A plan change (billing invalidates the tenant's entitlements): the next /v1/me shows the new plan.
    signed = await signup(harness.client, "plan@example.com", account_type="influencer")
    token = signed["tokens"]["access_token"]
    assert (await harness.client.get("/v1/me", headers=bearer(token))).json()["plan"]["name"] == "free"
    assert (await harness.client.get("/v1/me", headers=bearer(token))).json()["plan"]["name"] == "free"
    await assign(harness.kernel, signed["tenant"]["id"], "internal")
    assert (await harness.client.get("/v1/me", headers=bearer(token))).json()["plan"]["name"] == "internal"

    # An account fact (a verified address) changes the cached caller: the memo and the cached body follow.
    assert (await harness.client.get("/v1/me", headers=bearer(token))).json()["user"]["email_verified"] is False
    await mark_email_verified(harness.kernel, email="plan@example.com", by="test")
    assert (await harness.client.get("/v1/me", headers=bearer(token))).json()["user"]["email_verified"] is True


async def test_the_memoized_actor_is_shared_read_only(make_auth):
    import pytest

    harness = await make_auth()
    token = (await signup(harness.client, "shared@example.com"))["tokens"]["access_token"]
    assert (await harness.client.get("/v1/me", headers=bearer(token))).status_code == 200
    _key, _entry, actor, _expires = state_of(harness.kernel).resolved[token]
    # Every later request with this token gets this object: a route changing it would change them all.
    with pytest.raises(TypeError):
        actor.attributes["email_verified"] = True  # type: ignore[index]
    me = await harness.client.get("/v1/me", headers=bearer(token))
    assert me.status_code == 200 and me.json()["user"]["email"] == "shared@example.com"


def test_credentials_are_read_as_the_request_headers_read_them():
    """The memo's credential is read from the raw ASGI headers in one pass: the same answer as Starlette's
    ``request.headers.get`` for every mix of X-API-Key and Authorization, duplicates (the first wins) and other schemes."""
    import itertools

    from starlette.requests import Request

    from botcriptofy_auth._principals import _credential_headers, _credentials

    def by_starlette(request: Request) -> tuple[str | None, str | None]:
        return request.headers.get("x-api-key"), request.headers.get("authorization")

    choices = [
        (b"authorization", b"Bearer eyJ.token.sig"),
        (b"authorization", b"Bearer  bcf_key_one "),
        (b"authorization", b"Basic dXNlcjpwYXNz"),
        (b"x-api-key", b" bcf_key_two"),
        (b"x-api-key", b"caf\xe9"),  # latin-1, as Starlette decodes
        (b"accept", b"application/json"),
    ]
    for size in range(4):
        for headers in itertools.permutations(choices, size):
            request = Request({"type": "http", "headers": [(b"host", b"h"), *headers]})
            assert _credential_headers(request) == by_starlette(request), headers
    request = Request({"type": "http", "headers": [(b"authorization", b"Bearer  bcf_key_one ")]})
    assert _credentials(request) == ("bcf_key_one", True)
    request = Request({"type": "http", "headers": [(b"authorization", b"Basic x"), (b"x-api-key", b" k ")]})
    assert _credentials(request) == ("k", True)
