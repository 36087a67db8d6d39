"""Sign-up, login, refresh rotation, logout, sessions, profile and /v1/me, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import jwt
import sqlalchemy as sa

from botcriptofy.testing import wait_until
from botcriptofy_auth._models import User
from botcriptofy_auth._schemas import MeOut

from .conftest import STRONG_PASSWORD, Billing, Recorder, bearer, fullwidth, login, signup


async def test_signup_creates_user_tenant_and_tokens(make_auth):
    recorder = Recorder()
    harness = await make_auth(plugins={"recorder": recorder})
    body = await signup(harness.client, "Ana.Silva@Example.COM", name="Ana Silva")
    assert body["user"]["email"] == "ana.silva@example.com"
    assert body["tenant"]["type"] == "trader" and body["tenant"]["plan"] == "free"
    tokens = body["tokens"]
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 900
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "EdDSA" and header["kid"]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["sub"] == body["user"]["id"] and claims["tid"] == body["tenant"]["id"]

    influencer = await signup(harness.client, "influ@example.com", account_type="influencer", name="Bia Influencer")
    # Influencers start on Free, pending the marketing department's review (tests/plugins/auth/test_influencers.py).
    assert influencer["tenant"]["type"] == "influencer" and influencer["tenant"]["plan"] == "free"
    assert influencer["tenant"]["review"] == "pending" and body["tenant"]["review"] is None
    assert influencer["tenant"]["id"] != body["tenant"]["id"]
    await wait_until(lambda: len(recorder.of("auth.user_signed_up")) == 2)


async def test_emails_are_unique_after_normalisation(make_auth):
    harness = await make_auth()
    await signup(harness.client, "carlos@example.com")
    for variant in ("CARLOS@example.com", " carlos@EXAMPLE.com ", fullwidth("carlos") + "@example.com"):
        response = await harness.client.post(
            "/v1/auth/signup", json={"email": variant, "password": STRONG_PASSWORD, "name": "Carlos", "account_type": "trader"}
        )
        assert response.status_code == 409, variant
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"] == "email"
    assert (await login(harness.client, fullwidth("CARLOS") + "@example.com")).status_code == 200


async def test_concurrent_signups_with_one_email_exactly_one_wins(make_auth):
    harness = await make_auth()
    payload = {"email": "race@example.com", "password": STRONG_PASSWORD, "name": "Racer", "account_type": "trader"}
    responses = await asyncio.gather(*(harness.client.post("/v1/auth/signup", json=payload) for _ in range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 7, [r.text for r in responses]
    async with harness.kernel.database().session(system=True) as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(User).where(User.email == "race@example.com")) == 1


async def test_password_policy_error_names_the_field(make_auth):
    harness = await make_auth()
    response = await harness.client.post(
        "/v1/auth/signup", json={"email": "p@example.com", "password": "short", "name": "Pat", "account_type": "trader"}
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["errors"][0]["field"] == "password" and "at least 12 characters" in problem["detail"]
    response = await harness.client.post(
        "/v1/auth/signup", json={"email": "p@example.com", "password": STRONG_PASSWORD, "name": "Pat", "account_type": "admin"}
    )
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "account_type"


async def test_login_me_and_plan(make_auth):
    recorder = Recorder()
    harness = await make_auth(plugins={"recorder": recorder})
    await signup(harness.client, "dora@example.com", name="Dora")
    wrong = await login(harness.client, "dora@example.com", "not the password at all")
    assert wrong.status_code == 401 and wrong.json()["detail"] == "Invalid e-mail or password."
    unknown = await login(harness.client, "nobody@example.com")
    assert unknown.status_code == 401 and unknown.json()["detail"] == wrong.json()["detail"]  # no account enumeration
    response = await login(harness.client, "DORA@example.com")
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert response.headers["cache-control"] == "no-store"
    me = await harness.client.get("/v1/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    data = me.json()
    assert MeOut.model_validate(data).model_dump(mode="json") == data  # the hand-serialised body is exactly the declared model
    assert data["user"]["email"] == "dora@example.com" and data["tenant"]["type"] == "trader"
    assert data["roles"] == {} and "trading:*" in data["permissions"]
    assert data["plan"] == {"name": "free", "source": "stored", "features": [], "limits": {}}
    assert (await harness.client.get("/v1/me")).status_code == 401
    await wait_until(lambda: recorder.of("auth.login_succeeded") and recorder.of("auth.login_failed"))
    failed = recorder.of("auth.login_failed")
    assert {f["reason"] for f in failed} == {"bad_password", "unknown_user"}
    assert all("password" not in str(f).lower().replace("bad_password", "") for f in failed)


async def test_me_takes_the_plan_from_billing_when_it_answers(make_auth):
    harness = await make_auth(plugins={"billing": Billing("pro")})
    body = await signup(harness.client, "eva@example.com")
    data = (await harness.client.get("/v1/me", headers=bearer(body["tokens"]["access_token"]))).json()
    assert MeOut.model_validate(data).model_dump(mode="json") == data
    assert data["plan"]["name"] == "pro" and data["plan"]["source"] == "billing"
    assert data["plan"]["limits"] == {"bots": 10, "orders_per_day": None} and "api_keys" in data["plan"]["features"]


async def test_refresh_rotates_and_reuse_revokes_the_family(make_auth):
    recorder = Recorder()
    harness = await make_auth(plugins={"recorder": recorder})
    first = (await signup(harness.client, "fabio@example.com"))["tokens"]
    second = await harness.client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    third = (await harness.client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})).json()
    assert (await harness.client.get("/v1/me", headers=bearer(third["access_token"]))).status_code == 200

    # An attacker replays the first (already rotated) refresh token.
    reuse = await harness.client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    assert reuse.json()["type"].endswith("/refresh-token-reused")
    # The whole family is revoked: the newest refresh token and the live access token stop working.
    assert (await harness.client.post("/v1/auth/refresh", json={"refresh_token": third["refresh_token"]})).status_code == 401
    me = await harness.client.get("/v1/me", headers=bearer(third["access_token"]))
    assert me.status_code == 401 and me.json()["type"].endswith("/session-revoked")
    await wait_until(lambda: recorder.of("auth.refresh_token_reused"))
    # A fresh login still works.
    assert (await login(harness.client, "fabio@example.com")).status_code == 200


async def test_concurrent_refresh_of_one_token_never_yields_two_live_pairs(make_auth):
    harness = await make_auth()
    tokens = (await signup(harness.client, "gil@example.com"))["tokens"]
    responses = await asyncio.gather(
        *(harness.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}) for _ in range(4))
    )
    assert sum(r.status_code == 200 for r in responses) <= 1
    assert all(r.status_code in (200, 401) for r in responses)
    winners = [r.json() for r in responses if r.status_code == 200]
    for pair in winners:  # the losers presented a used token: the family is revoked, the winner's pair too
        assert (await harness.client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})).status_code == 401


async def test_bad_refresh_tokens(make_auth):
    harness = await make_auth()
    for value in ("", "x" * 43, "' OR 1=1 --", "a" * 300):
        response = await harness.client.post("/v1/auth/refresh", json={"refresh_token": value})
        assert response.status_code in (401, 422), value
        assert response.headers["content-type"] == "application/problem+json"


async def test_logout_is_immediate_and_logout_all_ends_every_session(make_auth):
    harness = await make_auth()
    a = (await signup(harness.client, "hana@example.com"))["tokens"]
    b = (await login(harness.client, "hana@example.com")).json()
    c = (await login(harness.client, "hana@example.com")).json()
    for pair in (a, b, c):
        assert (await harness.client.get("/v1/me", headers=bearer(pair["access_token"]))).status_code == 200

    assert (await harness.client.post("/v1/auth/logout", headers=bearer(a["access_token"]))).status_code == 204
    assert (await harness.client.get("/v1/me", headers=bearer(a["access_token"]))).status_code == 401
    assert (await harness.client.post("/v1/auth/refresh", json={"refresh_token": a["refresh_token"]})).status_code == 401
    assert (await harness.client.get("/v1/me", headers=bearer(b["access_token"]))).status_code == 200

    listed = (await harness.client.get("/v1/auth/sessions", headers=bearer(b["access_token"]))).json()
    assert len(listed) == 2 and sum(s["current"] for s in listed) == 1

    out = await harness.client.post("/v1/auth/logout-all", headers=bearer(b["access_token"]))
    assert out.json() == {"revoked": 2}
    for pair in (b, c):
        assert (await harness.client.get("/v1/me", headers=bearer(pair["access_token"]))).status_code == 401
        assert (await harness.client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})).status_code == 401


async def test_revoke_one_session_from_another(make_auth):
    harness = await make_auth()
    phone = (await signup(harness.client, "ines@example.com"))["tokens"]
    laptop = (await login(harness.client, "ines@example.com")).json()
    sessions = (await harness.client.get("/v1/auth/sessions", headers=bearer(laptop["access_token"]))).json()
    other = next(s["id"] for s in sessions if not s["current"])
    assert (await harness.client.delete(f"/v1/auth/sessions/{other}", headers=bearer(laptop["access_token"]))).status_code == 204
    assert (await harness.client.get("/v1/me", headers=bearer(phone["access_token"]))).status_code == 401
    assert (await harness.client.delete(f"/v1/auth/sessions/{other}", headers=bearer(laptop["access_token"]))).status_code == 404


async def test_password_change_logs_out_other_sessions(make_auth):
    harness = await make_auth()
    old = (await signup(harness.client, "joao@example.com"))["tokens"]
    current = (await login(harness.client, "joao@example.com")).json()
    wrong = await harness.client.post(
        "/v1/auth/password",
        headers=bearer(current["access_token"]),
        json={"current_password": "not it at all", "new_password": "another long passphrase"},
    )
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "current_password"
    weak = await harness.client.post(
        "/v1/auth/password", headers=bearer(current["access_token"]), json={"current_password": STRONG_PASSWORD, "new_password": "short"}
    )
    assert weak.status_code == 422 and weak.json()["errors"][0]["field"] == "new_password"
    done = await harness.client.post(
        "/v1/auth/password",
        headers=bearer(current["access_token"]),
        json={"current_password": STRONG_PASSWORD, "new_password": "another long passphrase"},
    )
    assert done.json() == {"revoked": 1}
    assert (await harness.client.get("/v1/me", headers=bearer(old["access_token"]))).status_code == 401
    assert (await harness.client.get("/v1/me", headers=bearer(current["access_token"]))).status_code == 200
    assert (await login(harness.client, "joao@example.com")).status_code == 401
    assert (await login(harness.client, "joao@example.com", "another long passphrase")).status_code == 200


async def test_profile_fields_are_encrypted_at_rest(make_auth):
    harness = await make_auth()
    body = await signup(harness.client, "katia@example.com")
    headers = bearer(body["tokens"]["access_token"])
    response = await harness.client.patch("/v1/me", headers=headers, json={"phone": "+55 11 91234-5678", "tax_id": "123.456.789-09"})
    assert response.status_code == 200, response.text
    assert response.json()["user"]["phone"] == "+55 11 91234-5678"
    assert (await harness.client.get("/v1/me", headers=headers)).json()["user"]["tax_id"] == "123.456.789-09"
    async with harness.kernel.database().engine.connect() as connection:
        phone, tax_id = (
            await connection.execute(sa.text("SELECT phone, tax_id FROM auth_users WHERE id = :id"), {"id": body["user"]["id"]})
        ).one()
    assert phone.startswith("v1.") and "91234" not in phone
    assert tax_id.startswith("v1.") and "456" not in tax_id
    bad = await harness.client.patch("/v1/me", headers=headers, json={"phone": "call me maybe"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "phone"


async def test_jwks_and_openapi(make_auth):
    harness = await make_auth()
    body = await signup(harness.client, "leo@example.com")
    keys = (await harness.client.get("/.well-known/jwks.json")).json()["keys"]
    kid = jwt.get_unverified_header(body["tokens"]["access_token"])["kid"]
    key = next(k for k in keys if k["kid"] == kid)
    claims = jwt.decode(body["tokens"]["access_token"], jwt.PyJWK(key).key, algorithms=[key["alg"]], audience="botcriptofy-api")
    assert claims["sub"] == body["user"]["id"]
    paths = (await harness.client.get("/openapi.json")).json()["paths"]
    for path in (
        "/v1/auth/signup",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/auth/logout-all",
        "/v1/me",
        "/v1/auth/api-keys",
        "/v1/auth/api-keys/{key_id}",
        "/v1/auth/sessions",
        "/v1/auth/totp/enroll",
        "/v1/auth/totp/verify",
        "/v1/auth/google/start",
        "/v1/auth/google/callback",
    ):
        assert path in paths, path
    assert paths["/v1/auth/signup"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
