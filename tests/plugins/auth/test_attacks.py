"""The auth plugin as an attacker sees it: forged tokens, other tenants' IDs, RLS, injection, huge bodies, brute force."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

import asyncpg
import jwt
import pytest
import sqlalchemy as sa

import botcriptofy_ratelimit
from botcriptofy.testing import wait_until
from botcriptofy_auth._keys import KeyRing, generate_private_key
from botcriptofy_auth._state import STATE

from .conftest import STRONG_PASSWORD, Billing, Recorder, bearer, login, signup, verify

PROBLEM = "application/problem+json"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_forged_access_tokens_are_refused(make_auth):
    harness = await make_auth()
    body = await signup(harness.client, "victim@example.com")
    token = body["tokens"]["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    header = jwt.get_unverified_header(token)
    ring = harness.kernel.stash[STATE].keyring
    stranger = KeyRing(generate_private_key("EdDSA"))
    now = int(time.time())

    forgeries = {
        "alg none": f"{_b64({'alg': 'none', 'kid': header['kid'], 'typ': 'at+jwt'})}.{_b64(claims)}.",
        "alg none, no kid": jwt.encode(claims, None, algorithm="none"),
        "tampered payload": ".".join([token.split(".")[0], _b64({**claims, "sub": str(uuid.uuid4())}), token.split(".")[2]]),
        "tampered signature": token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
        "expired": ring.sign({**claims, "iat": now - 3600, "nbf": now - 3600, "exp": now - 1800}),
        "wrong audience": ring.sign({**claims, "aud": "another-service"}),
        "wrong issuer": ring.sign({**claims, "iss": "https://evil.example"}),
        "unknown key id": stranger.sign(claims),
        "stranger's key with our kid": jwt.encode(claims, stranger.signing, algorithm="EdDSA", headers={"kid": header["kid"]}),
        "not yet valid": ring.sign({**claims, "nbf": now + 3600}),
        "garbage": "definitely.not.a-token",
        "huge": "a" * 9000,
    }
    for name, forged in forgeries.items():
        response = await harness.client.get("/v1/me", headers=bearer(forged))
        assert response.status_code == 401, name
        assert response.headers["content-type"] == PROBLEM, name
        assert response.headers["www-authenticate"].startswith("Bearer"), name
    # A valid signature over another session id of the same user does not pass either.
    response = await harness.client.get("/v1/me", headers=bearer(ring.sign({**claims, "sid": str(uuid.uuid4())})))
    assert response.status_code == 401
    assert (await harness.client.get("/v1/me", headers=bearer(token))).status_code == 200
    assert (await harness.client.get("/v1/me", headers={"Authorization": "Bearer"})).status_code == 401
    assert (await harness.client.get("/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})).status_code == 401


async def test_other_tenants_objects_answer_404(make_auth):
    harness = await make_auth(plugins={"billing": Billing("pro")})
    alice = (await signup(harness.client, "alice@example.com"))["tokens"]["access_token"]
    await verify(harness, "alice@example.com")
    mallory = (await signup(harness.client, "mallory@example.com", name="Mallory"))["tokens"]["access_token"]
    key = (await harness.client.post("/v1/auth/api-keys", headers=bearer(alice), json={"name": "bot", "scopes": ["trading:read"]})).json()
    alice_sessions = (await harness.client.get("/v1/auth/sessions", headers=bearer(alice))).json()

    assert (await harness.client.delete(f"/v1/auth/api-keys/{key['id']}", headers=bearer(mallory))).status_code == 404
    assert (await harness.client.delete(f"/v1/auth/sessions/{alice_sessions[0]['id']}", headers=bearer(mallory))).status_code == 404
    for guess in (str(uuid.uuid4()), "1", "' OR '1'='1", "%00", "../../etc/passwd"):
        response = await harness.client.delete(f"/v1/auth/api-keys/{guess}", headers=bearer(mallory))
        assert response.status_code == 404 and response.headers["content-type"] == PROBLEM
    listed = (await harness.client.get("/v1/auth/api-keys", headers=bearer(mallory))).json()
    assert listed == []
    # Alice's key and session are untouched.
    assert (await harness.client.get("/v1/auth/api-keys", headers=bearer(alice))).json()[0]["revoked_at"] is None
    assert (await harness.client.get("/v1/me", headers=bearer(alice))).status_code == 200
    # Staff endpoints are closed to customers.
    assert (await harness.client.get("/v1/admin/staff", headers=bearer(mallory))).status_code == 403
    assert (await harness.client.get("/v1/admin/config", headers=bearer(mallory))).status_code == 403


async def test_tenant_scoped_sessions_see_only_their_tenant(make_auth):
    harness = await make_auth()
    a = await signup(harness.client, "scope-a@example.com")
    b = await signup(harness.client, "scope-b@example.com")
    database = harness.kernel.database()
    async with database.session(tenant_id=a["tenant"]["id"]) as session:
        from botcriptofy_auth._models import Session, User

        emails = (await session.scalars(sa.select(User.email))).all()
        assert emails == ["scope-a@example.com"]
        assert await session.get(User, b["user"]["id"]) is None
        assert {s.user_id for s in (await session.scalars(sa.select(Session))).all()} == {a["user"]["id"]}


async def test_raw_sql_under_row_level_security(postgres_url, kernel_harness):
    """On PostgreSQL, even raw SQL that forgets the tenant filter sees one tenant's rows."""
    import botcriptofy_auth
    import botcriptofy_storage

    from .conftest import auth_settings

    url = postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    harness = await kernel_harness(plugins={"storage": botcriptofy_storage, "auth": botcriptofy_auth}, settings=auth_settings(url))
    a = await signup(harness.client, "rls-a@example.com")
    await signup(harness.client, "rls-b@example.com")
    async with harness.kernel.database().session(tenant_id=a["tenant"]["id"]) as session:
        rows = (await session.execute(sa.text("SELECT email FROM auth_users"))).scalars().all()
        tokens = (await session.execute(sa.text("SELECT count(*) FROM auth_refresh_tokens"))).scalar_one()
    assert rows == ["rls-a@example.com"] and tokens == 1
    # The same through a plain connection as the application role, with another tenant's id set.
    connection = await asyncpg.connect(postgres_url)
    try:
        async with connection.transaction():
            await connection.execute("SET LOCAL ROLE botcriptofy_app")
            await connection.execute(f"SELECT set_config('app.tenant_id', '{uuid.uuid4()}', true)")
            assert await connection.fetchval("SELECT count(*) FROM auth_users") == 0
            assert await connection.fetchval("SELECT count(*) FROM auth_sessions") == 0
            assert await connection.execute("UPDATE auth_users SET name = 'pwned'") == "UPDATE 0"
            assert await connection.execute("DELETE FROM auth_sessions") == "DELETE 0"
        async with connection.transaction():
            await connection.execute("SET LOCAL ROLE botcriptofy_app")
            await connection.execute(f"SELECT set_config('app.tenant_id', '{uuid.uuid4()}', true)")
            with pytest.raises(asyncpg.PostgresError, match="row-level security"):  # writing into another tenant
                await connection.execute(
                    "INSERT INTO auth_login_ips (id, tenant_id, user_id, ip, first_seen, last_seen) "
                    "VALUES ($1, $2, $3, '6.6.6.6', now(), now())",
                    str(uuid.uuid4()),
                    a["tenant"]["id"],
                    a["user"]["id"],
                )
    finally:
        await connection.close()


INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE auth_users; --",
    '" OR ""="',
    "admin'--",
    "1; SELECT pg_sleep(5)",
    "\u0000",
    "%s%s%s",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "\\x00\\x1a",
    "☃" * 50,
]


async def test_injection_and_oversized_values_never_5xx(make_auth):
    harness = await make_auth()
    body = await signup(harness.client, "fuzz@example.com")
    headers = bearer(body["tokens"]["access_token"])
    base = {
        ("POST", "/v1/auth/signup"): {"email": "new@example.com", "password": STRONG_PASSWORD, "name": "New", "account_type": "trader"},
        ("POST", "/v1/auth/login"): {"email": "fuzz@example.com", "password": STRONG_PASSWORD, "totp_code": "123456"},
        ("POST", "/v1/auth/refresh"): {"refresh_token": body["tokens"]["refresh_token"]},
        ("POST", "/v1/auth/api-keys"): {"name": "bot", "scopes": ["trading:read"], "expires_in_days": 30},
        ("PATCH", "/v1/me"): {"name": "Fuzz", "phone": "+5511912345678", "tax_id": "12345678909"},
        ("POST", "/v1/auth/password"): {"current_password": STRONG_PASSWORD, "new_password": "another long passphrase"},
        ("POST", "/v1/auth/totp/verify"): {"code": "123456"},
    }
    seen = 0
    for (method, path), valid in base.items():
        for field in valid:
            for value in [*INJECTIONS, "x" * 100_000, 10**30, -1, None, [], {"$ne": ""}, True]:
                payload = {**valid, field: value}
                response = await harness.client.request(method, path, json=payload, headers=headers)
                seen += 1
                assert response.status_code < 500, (path, field, str(value)[:40], response.text[:300])
                if response.status_code >= 400:
                    assert response.headers["content-type"] == PROBLEM, (path, field)
        huge = await harness.client.request(
            method, path, content=b'{"a": "' + b"x" * 2_000_000 + b'"}', headers={**headers, "content-type": "application/json"}
        )
        assert huge.status_code == 413 and huge.headers["content-type"] == PROBLEM
        broken = await harness.client.request(method, path, content=b'{"email": ', headers={**headers, "content-type": "application/json"})
        assert broken.status_code == 400
    for path in (
        "/v1/auth/google/callback?code=%27%20OR%201=1&state=x",
        "/v1/auth/sessions/%27%3B%20DROP%20TABLE%20x",
        "/v1/auth/google/start?account_type=%27",
    ):
        response = await harness.client.request("DELETE" if "sessions" in path else "GET", path, headers=headers)
        assert 400 <= response.status_code < 500, path
    assert seen > 300
    # The tables are all still there (the fuzzed logins made this address wait, as they should).
    assert (await login(harness.client, "fuzz@example.com")).status_code == 429
    async with harness.kernel.database().session(system=True) as session:
        names = dict((await session.execute(sa.text("SELECT email, name FROM auth_users"))).all())
    # The first sign-up whose fuzzed field passed validation (an injection string as password) made the one new account.
    assert set(names) == {"fuzz@example.com", "new@example.com"}
    assert (await login(harness.client, "new@example.com", INJECTIONS[1])).status_code == 200


async def test_five_failures_make_the_address_wait_not_the_account(make_auth):
    """Five wrong passwords from one address slow that address down (429, growing waits); see test_lockout.py."""
    recorder = Recorder()
    harness = await make_auth(plugins={"recorder": recorder})
    await signup(harness.client, "brute@example.com")
    for attempt in range(4):
        response = await login(harness.client, "brute@example.com", f"wrong password {attempt}")
        assert response.status_code == 401
    fifth = await login(harness.client, "brute@example.com", "wrong password 5")
    assert fifth.status_code == 429
    problem = fifth.json()
    assert problem["type"].endswith("/too-many-attempts") and "from this address" in problem["detail"]
    assert int(fifth.headers["retry-after"]) >= 1
    await wait_until(lambda: recorder.of("auth.login_throttled"))
    throttled = recorder.of("auth.login_throttled")[0]
    assert throttled["failures"] == 5 and throttled["email"] == "brute@example.com"
    assert len([f for f in recorder.of("auth.login_failed") if f["reason"] == "bad_password"]) == 5
    assert not recorder.of("auth.account_locked")


async def test_unknown_email_is_throttled_like_a_real_account(make_auth):
    harness = await make_auth()
    await signup(harness.client, "real@example.com")
    ghost = [(await login(harness.client, "ghost@example.com", f"guess {i}")) for i in range(6)]
    real = [(await login(harness.client, "real@example.com", f"guess {i}")) for i in range(6)]
    assert [r.status_code for r in ghost] == [r.status_code for r in real] == [401, 401, 401, 401, 429, 429]
    assert [(r.json()["title"], r.json()["detail"]) for r in ghost[:4]] == [(r.json()["title"], r.json()["detail"]) for r in real[:4]]


async def test_failures_outside_the_window_do_not_lock(make_auth):
    harness = await make_auth(lockout_window=1)
    await signup(harness.client, "slow@example.com")

    for attempt in range(3):
        assert (await login(harness.client, "slow@example.com", f"nope {attempt}")).status_code == 401
    await asyncio.sleep(1.1)
    for attempt in range(4):
        assert (await login(harness.client, "slow@example.com", f"nope again {attempt}")).status_code == 401
    assert (await login(harness.client, "slow@example.com")).status_code == 200


async def test_per_ip_login_throttle_with_the_rate_limiter(make_auth):
    harness = await make_auth(plugins={"ratelimit": botcriptofy_ratelimit}, login_ip_limit=3, login_ip_burst=3)
    await signup(harness.client, "ip@example.com")
    statuses = []
    for i in range(5):
        response = await login(harness.client, f"spray{i}@example.com", "password spraying")
        statuses.append(response.status_code)
    assert statuses[:3] == [401, 401, 401] and 429 in statuses[3:]
    throttled = next(r for r in [await login(harness.client, "ip@example.com")] if r.status_code == 429)
    assert int(throttled.headers["retry-after"]) >= 1 and throttled.headers["content-type"] == PROBLEM


async def test_a_forged_token_costs_one_signature_check_with_the_rate_limiter_in_front(make_auth):
    """The rate limiter resolves the caller before the route: a refused token must not be verified again by the route."""
    harness = await make_auth(plugins={"ratelimit": botcriptofy_ratelimit})
    token = (await signup(harness.client, "twice@example.com"))["tokens"]["access_token"]
    ring = harness.kernel.stash[STATE].keyring
    checked: list[str] = []
    original = ring.verify

    def counting(candidate, **kwargs):
        checked.append(candidate)
        return original(candidate, **kwargs)

    ring.verify = counting
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(3):
        response = await harness.client.get("/v1/me", headers=bearer(forged))
        assert response.status_code == 401 and response.headers["content-type"] == PROBLEM
    assert checked == [forged] * 3  # once per request, not once per consumer
    assert (await harness.client.get("/v1/me", headers=bearer(token))).status_code == 200
