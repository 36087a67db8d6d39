"""Account flows that prove a mailbox: e-mail verification, password reset, e-mail change (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa

from botcriptofy.testing import wait_until
from botcriptofy_auth._models import AccountToken, User
from botcriptofy_auth._util import now

from .conftest import STRONG_PASSWORD, Billing, Recorder, auth_settings, bearer, login, signup, verify

NEW_PASSWORD = "a completely different passphrase"
KEY = {"name": "bot", "scopes": ["trading:read"]}


async def _expire(harness, email: str, purpose: str) -> None:
    async with harness.kernel.database().session(system=True) as session:
        await session.execute(
            sa.update(AccountToken)
            .where(AccountToken.email == email, AccountToken.purpose == purpose)
            .values(expires_at=now() - timedelta(seconds=1))
        )


async def _reset_token(harness, email: str, count: int = 1) -> str:
    await wait_until(lambda: len([n for n in harness.mailbox.notifications if n.template == "auth.password_reset"]) >= count)
    return await harness.mailbox.token_for(harness.kernel, email, "auth.password_reset")


def _tampered(token: str) -> str:
    return token[:10] + ("A" if token[10] != "A" else "B") + token[11:]


# -- verification ---------------------------------------------------------------------------------


async def test_sign_up_sends_a_verification_link_and_unverified_accounts_cannot_create_api_keys(make_auth):
    recorder = Recorder()
    harness = await make_auth(plugins={"billing": Billing("pro"), "recorder": recorder})
    body = await signup(harness.client, "vera@example.com", name="Vera")
    access = bearer(body["tokens"]["access_token"])
    assert body["user"]["email_verified"] is False
    (sent,) = harness.mailbox.notifications
    assert sent.recipient.startswith("account-mail:") and sent.channel == "email" and sent.template == "auth.verify_email"
    assert sent.severity == "critical" and sent.tenant_id is None
    (person,) = await harness.kernel.resolve_recipients(sent.recipient)
    # The link goes to the address only: no tenant, so no in-app inbox entry a session holder could read.
    assert person.email == "vera@example.com" and person.tenant_id is None and person.user_id == body["user"]["id"]

    # The account works (the plan allows keys), but keys wait for a verified address: 403 naming the reason.
    assert (await harness.client.get("/v1/me", headers=access)).status_code == 200
    refused = await harness.client.post("/v1/auth/api-keys", headers=access, json=KEY)
    assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["reason"] == "email_not_verified" and refused.json()["type"].endswith("/email-not-verified")
    assert "verify" in refused.json()["detail"].lower()

    token = sent.params["token"]
    async with harness.kernel.database().session(system=True) as session:
        stored = (await session.execute(sa.select(AccountToken.__table__))).mappings().one()
    assert token not in {str(value) for value in stored.values()}  # only a keyed hash is stored
    assert (await harness.client.post("/v1/auth/email/verify", json={"token": token})).json() == {"email_verified": True}
    me = (await harness.client.get("/v1/me", headers=access)).json()
    assert me["user"]["email_verified"] is True  # the cached caller was refreshed
    assert (await harness.client.post("/v1/auth/api-keys", headers=access, json=KEY)).status_code == 201
    await wait_until(lambda: recorder.of("auth.email_verified"))
    # The link was for one use; the address stays verified and the link now reaches nobody.
    again = await harness.client.post("/v1/auth/email/verify", json={"token": token})
    assert again.status_code == 400 and again.json()["type"].endswith("/token-used") and again.json()["errors"][0]["field"] == "token"
    assert await harness.kernel.resolve_recipients(sent.recipient) == []


async def test_the_actor_carries_the_kernels_email_verified_attribute(make_auth):
    from botcriptofy import Route, hookimpl, require

    class Echo:
        @hookimpl
        def register_routes(self, kernel):
            async def who(request):
                actor = await require(request)
                return {k: actor.attributes.get(k) for k in ("email", "name", "email_verified")}

            return [Route("/v1/test/who", who)]

    harness = await make_auth(plugins={"echo": Echo()})
    body = await signup(harness.client, "attr@example.com", name="Attr")
    access = bearer(body["tokens"]["access_token"])
    assert (await harness.client.get("/v1/test/who", headers=access)).json() == {
        "email": "attr@example.com",
        "name": "Attr",
        "email_verified": False,
    }
    await verify(harness, "attr@example.com")
    assert (await harness.client.get("/v1/test/who", headers=access)).json()["email_verified"] is True


async def test_bad_expired_tampered_and_superseded_verification_links(make_auth):
    harness = await make_auth(account_mail_interval=0)
    body = await signup(harness.client, "links@example.com")
    access = bearer(body["tokens"]["access_token"])
    first = await harness.mailbox.token_for(harness.kernel, "links@example.com", "auth.verify_email")
    for bogus in (_tampered(first), "nonsense", "x" * 256, first + "A"):
        response = await harness.client.post("/v1/auth/email/verify", json={"token": bogus})
        assert response.status_code == 400 and response.json()["type"].endswith("/token-invalid"), bogus
    too_long = await harness.client.post("/v1/auth/email/verify", json={"token": "x" * 300})
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["field"] == "token"

    resent = await harness.client.post("/v1/auth/email/verify/resend", headers=access)
    assert resent.status_code == 200 and resent.json()["sent"] is True
    second = await harness.mailbox.token_for(harness.kernel, "links@example.com", "auth.verify_email")
    assert second != first
    old = await harness.client.post("/v1/auth/email/verify", json={"token": first})
    assert old.status_code == 400 and old.json()["type"].endswith("/token-superseded")

    await _expire(harness, "links@example.com", "verify_email")
    expired = await harness.client.post("/v1/auth/email/verify", json={"token": second})
    assert expired.status_code == 400 and expired.json()["type"].endswith("/token-expired")
    assert (await harness.client.get("/v1/me", headers=access)).json()["user"]["email_verified"] is False

    # A reset token is not a verification token.
    assert (await harness.client.post("/v1/auth/password/forgot", json={"email": "links@example.com"})).status_code == 202
    reset = await _reset_token(harness, "links@example.com")
    wrong = await harness.client.post("/v1/auth/email/verify", json={"token": reset})
    assert wrong.status_code == 400 and wrong.json()["type"].endswith("/token-invalid")


async def test_resend_is_rate_limited_and_refused_once_verified(make_auth, database_url):
    harness = await make_auth(account_mail_interval=60, account_mail_daily_cap=3)
    body = await signup(harness.client, "resend@example.com")
    access = bearer(body["tokens"]["access_token"])
    # The sign-up's own e-mail counts: an immediate resend waits.
    soon = await harness.client.post("/v1/auth/email/verify/resend", headers=access)
    assert soon.status_code == 429 and 0 < int(soon.headers["retry-after"]) <= 60
    assert len(harness.mailbox.notifications) == 1
    await harness.apply(auth_settings(database_url, account_mail_interval=0, account_mail_daily_cap=3))
    assert (await harness.client.post("/v1/auth/email/verify/resend", headers=access)).status_code == 200
    assert (await harness.client.post("/v1/auth/email/verify/resend", headers=access)).status_code == 200
    capped = await harness.client.post("/v1/auth/email/verify/resend", headers=access)
    assert capped.status_code == 429 and capped.json()["type"].endswith("/too-many-emails")
    assert len(harness.mailbox.notifications) == 3
    await verify(harness, "resend@example.com")
    done = await harness.client.post("/v1/auth/email/verify/resend", headers=access)
    assert done.status_code == 409 and done.json()["type"].endswith("/email-verified")


# -- password reset -------------------------------------------------------------------------------


async def test_forgot_password_answers_alike_for_known_and_unknown_addresses(make_auth):
    harness = await make_auth(account_mail_interval=0)
    await signup(harness.client, "known@example.com")
    before = len(harness.mailbox.notifications)
    known = await harness.client.post("/v1/auth/password/forgot", json={"email": "known@example.com"})
    unknown = await harness.client.post("/v1/auth/password/forgot", json={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content
    ignored = {"date", "x-request-id", "server-timing"}
    assert {k: v for k, v in known.headers.items() if k not in ignored} == {k: v for k, v in unknown.headers.items() if k not in ignored}
    await _reset_token(harness, "known@example.com")
    await asyncio.sleep(0.3)  # the unknown address's background work is done too
    resets = [n for n in harness.mailbox.notifications[before:] if n.template == "auth.password_reset"]
    assert len(resets) == 1
    malformed = await harness.client.post("/v1/auth/password/forgot", json={"email": "not an address"})
    assert malformed.status_code == 422 and malformed.json()["errors"][0]["field"] == "email"


async def test_forgot_password_is_throttled_per_caller_address_alike_for_every_address(make_auth):
    import botcriptofy_ratelimit

    harness = await make_auth(plugins={"ratelimit": botcriptofy_ratelimit}, login_ip_limit=2, login_ip_burst=2, account_mail_interval=0)
    await signup(harness.client, "many@example.com")
    statuses = [
        (await harness.client.post("/v1/auth/password/forgot", json={"email": email})).status_code
        for email in ("many@example.com", "ghost1@example.com", "many@example.com", "ghost2@example.com")
    ]
    assert statuses[:2] == [202, 202] and statuses[-1] == 429
    throttled = await harness.client.post("/v1/auth/password/forgot", json={"email": "many@example.com"})
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    await _reset_token(harness, "many@example.com")


async def test_reset_sets_the_password_ends_every_session_and_works_once(make_auth):
    recorder = Recorder()
    harness = await make_auth(plugins={"recorder": recorder}, account_mail_interval=0)
    body = await signup(harness.client, "reset@example.com")
    other = (await login(harness.client, "reset@example.com")).json()
    third = (await login(harness.client, "reset@example.com")).json()
    assert (await harness.client.post("/v1/auth/password/forgot", json={"email": "reset@example.com"})).status_code == 202
    token = await _reset_token(harness, "reset@example.com")

    # A password the policy refuses does not burn the link.
    weak = await harness.client.post("/v1/auth/password/reset", json={"token": token, "new_password": "short"})
    assert weak.status_code == 422 and weak.json()["errors"][0]["field"] == "new_password"
    tampered = await harness.client.post("/v1/auth/password/reset", json={"token": _tampered(token), "new_password": NEW_PASSWORD})
    assert tampered.status_code == 400 and tampered.json()["type"].endswith("/token-invalid")

    done = await harness.client.post("/v1/auth/password/reset", json={"token": token, "new_password": NEW_PASSWORD})
    assert done.status_code == 200 and done.json() == {"revoked": 3}
    for pair in (body["tokens"], other, third):
        assert (await harness.client.get("/v1/me", headers=bearer(pair["access_token"]))).status_code == 401
        assert (await harness.client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})).status_code == 401
    assert (await login(harness.client, "reset@example.com")).status_code == 401
    fresh = await login(harness.client, "reset@example.com", NEW_PASSWORD)
    assert fresh.status_code == 200
    # The link proved the mailbox.
    me = (await harness.client.get("/v1/me", headers=bearer(fresh.json()["access_token"]))).json()
    assert me["user"]["email_verified"] is True
    await wait_until(lambda: recorder.of("auth.password_reset") and recorder.of("auth.sessions_revoked"))
    assert recorder.of("auth.sessions_revoked")[-1]["reason"] == "password_reset"

    reused = await harness.client.post("/v1/auth/password/reset", json={"token": token, "new_password": "yet another passphrase here"})
    assert reused.status_code == 400 and reused.json()["type"].endswith("/token-used")
    assert (await login(harness.client, "reset@example.com", NEW_PASSWORD)).status_code == 200


async def test_expired_and_superseded_reset_links(make_auth):
    harness = await make_auth(account_mail_interval=0)
    await signup(harness.client, "late@example.com")
    await harness.client.post("/v1/auth/password/forgot", json={"email": "late@example.com"})
    first = await _reset_token(harness, "late@example.com")
    await harness.client.post("/v1/auth/password/forgot", json={"email": "late@example.com"})
    second = await _reset_token(harness, "late@example.com", count=2)
    superseded = await harness.client.post("/v1/auth/password/reset", json={"token": first, "new_password": NEW_PASSWORD})
    assert superseded.status_code == 400 and superseded.json()["type"].endswith("/token-superseded")
    await _expire(harness, "late@example.com", "reset_password")
    expired = await harness.client.post("/v1/auth/password/reset", json={"token": second, "new_password": NEW_PASSWORD})
    assert expired.status_code == 400 and expired.json()["type"].endswith("/token-expired")
    assert (await login(harness.client, "late@example.com")).status_code == 200


async def test_concurrent_uses_of_one_reset_link_let_one_win(make_auth):
    harness = await make_auth(account_mail_interval=0)
    await signup(harness.client, "race@example.com")
    await harness.client.post("/v1/auth/password/forgot", json={"email": "race@example.com"})
    token = await _reset_token(harness, "race@example.com")
    answers = await asyncio.gather(
        *(harness.client.post("/v1/auth/password/reset", json={"token": token, "new_password": f"{NEW_PASSWORD} {i}"}) for i in range(4))
    )
    assert sorted(a.status_code for a in answers) == [200, 400, 400, 400]


async def test_reset_requests_for_one_address_are_spaced(make_auth):
    harness = await make_auth(account_mail_interval=60)
    await signup(harness.client, "spaced@example.com")
    for _ in range(3):
        assert (await harness.client.post("/v1/auth/password/forgot", json={"email": "spaced@example.com"})).status_code == 202
    await _reset_token(harness, "spaced@example.com")
    await asyncio.sleep(0.3)
    assert len([n for n in harness.mailbox.notifications if n.template == "auth.password_reset"]) == 1


# -- e-mail change --------------------------------------------------------------------------------


async def _verified_account(harness, email: str) -> dict:
    body = await signup(harness.client, email)
    await verify(harness, email)
    return body


async def test_email_change_needs_both_addresses_when_the_current_one_is_verified(make_auth):
    recorder = Recorder()
    harness = await make_auth(plugins={"recorder": recorder}, account_mail_interval=0)
    body = await _verified_account(harness, "old@example.com")
    access = bearer(body["tokens"]["access_token"])
    await harness.client.post("/v1/auth/password/forgot", json={"email": "old@example.com"})
    pending_reset = await _reset_token(harness, "old@example.com")

    wrong = await harness.client.post(
        "/v1/auth/email/change", headers=access, json={"new_email": "new@example.com", "password": "wrong one"}
    )
    assert wrong.status_code == 403 and wrong.json()["errors"][0]["field"] == "password"
    started = await harness.client.post(
        "/v1/auth/email/change", headers=access, json={"new_email": "New@Example.com", "password": STRONG_PASSWORD}
    )
    assert started.status_code == 202, started.text
    assert started.json()["new_email"] == "new@example.com"
    assert sorted(started.json()["confirmations"]) == ["current_address", "new_address"]
    confirm = await harness.mailbox.token_for(harness.kernel, "new@example.com", "auth.email_change_confirm")
    notice = await harness.mailbox.token_for(harness.kernel, "old@example.com", "auth.email_change_notice")
    (sent,) = [n for n in harness.mailbox.notifications if n.template == "auth.email_change_notice"]
    assert sent.params["new_email"] == "n***@example.com" and "name" not in sent.params  # the outbox keeps no more than that

    # The new address alone does not move the account.
    half = await harness.client.post("/v1/auth/email/change/confirm", json={"token": confirm})
    assert half.json() == {"status": "pending", "waiting_for": ["current_address"]}
    assert (await harness.client.get("/v1/me", headers=access)).json()["user"]["email"] == "old@example.com"
    done = await harness.client.post("/v1/auth/email/change/confirm", json={"token": notice})
    assert done.json() == {"status": "changed", "waiting_for": []}
    me = (await harness.client.get("/v1/me", headers=access)).json()
    assert me["user"]["email"] == "new@example.com" and me["user"]["email_verified"] is True
    assert (await login(harness.client, "new@example.com")).status_code == 200
    assert (await login(harness.client, "old@example.com")).status_code == 401
    # A reset link sent to the old address died with it.
    stale = await harness.client.post("/v1/auth/password/reset", json={"token": pending_reset, "new_password": NEW_PASSWORD})
    assert stale.status_code == 400 and stale.json()["type"].endswith("/token-superseded")
    again = await harness.client.post("/v1/auth/email/change/confirm", json={"token": notice})
    assert again.status_code == 400 and again.json()["type"].endswith("/token-used")
    await wait_until(lambda: recorder.of("auth.email_changed"))


async def test_the_current_address_cancels_a_change_and_ends_every_session(make_auth):
    harness = await make_auth(account_mail_interval=0)
    body = await _verified_account(harness, "owner@example.com")
    # Someone who has the session and the password (but not the mailbox) tries to move the account.
    thief = (await login(harness.client, "owner@example.com")).json()
    started = await harness.client.post(
        "/v1/auth/email/change", headers=bearer(thief["access_token"]), json={"new_email": "thief@example.com", "password": STRONG_PASSWORD}
    )
    assert started.status_code == 202
    confirm = await harness.mailbox.token_for(harness.kernel, "thief@example.com", "auth.email_change_confirm")
    notice = await harness.mailbox.token_for(harness.kernel, "owner@example.com", "auth.email_change_notice")
    assert (await harness.client.post("/v1/auth/email/change/confirm", json={"token": confirm})).json()["status"] == "pending"

    cancelled = await harness.client.post("/v1/auth/email/change/cancel", json={"token": notice})
    assert cancelled.status_code == 200 and cancelled.json() == {"revoked": 2}
    for pair in (body["tokens"], thief):
        assert (await harness.client.get("/v1/me", headers=bearer(pair["access_token"]))).status_code == 401
    async with harness.kernel.database().session(system=True) as session:
        assert (await session.scalar(sa.select(User.email).where(User.id == body["user"]["id"]))) == "owner@example.com"
    # The confirmation token of the new address cannot be used to cancel, and the notice cannot be reused.
    assert (await harness.client.post("/v1/auth/email/change/cancel", json={"token": confirm})).status_code == 400
    assert (await harness.client.post("/v1/auth/email/change/confirm", json={"token": notice})).status_code == 400


async def test_an_unverified_account_moves_on_the_new_address_alone_and_takeover_paths_are_closed(make_auth):
    harness = await make_auth(plugins={"billing": Billing("pro")}, account_mail_interval=0)
    body = await signup(harness.client, "typo@exmaple.com")
    access = bearer(body["tokens"]["access_token"])
    other = await _verified_account(harness, "taken@example.com")
    taken = await harness.client.post(
        "/v1/auth/email/change", headers=access, json={"new_email": "taken@example.com", "password": STRONG_PASSWORD}
    )
    assert taken.status_code == 409 and taken.json()["errors"][0]["field"] == "new_email"
    same = await harness.client.post(
        "/v1/auth/email/change", headers=access, json={"new_email": "typo@exmaple.com", "password": STRONG_PASSWORD}
    )
    assert same.status_code == 422 and same.json()["errors"][0]["field"] == "new_email"
    look_alike = await harness.client.post(
        "/v1/auth/email/change", headers=access, json={"new_email": "t\u0430ken@example.com", "password": STRONG_PASSWORD}
    )
    assert look_alike.status_code == 422 and look_alike.json()["errors"][0]["field"] == "new_email"

    started = await harness.client.post(
        "/v1/auth/email/change", headers=access, json={"new_email": "typo@example.com", "password": STRONG_PASSWORD}
    )
    assert started.status_code == 202 and started.json()["confirmations"] == ["new_address"]
    # The account's unverified address is not asked: the notice is not sent there.
    assert not [n for n in harness.mailbox.notifications if n.template == "auth.email_change_notice"]
    confirm = await harness.mailbox.token_for(harness.kernel, "typo@example.com", "auth.email_change_confirm")
    assert (await harness.client.post("/v1/auth/email/change/confirm", json={"token": confirm})).json()["status"] == "changed"
    me = (await harness.client.get("/v1/me", headers=access)).json()
    assert me["user"]["email"] == "typo@example.com" and me["user"]["email_verified"] is True
    assert (await harness.client.post("/v1/auth/api-keys", headers=access, json=KEY)).status_code == 201

    # An API key (even one that may do everything its owner may) cannot move the account.
    key = (await harness.client.post("/v1/auth/api-keys", headers=access, json={"name": "all", "scopes": ["account:update"]})).json()
    by_key = await harness.client.post(
        "/v1/auth/email/change", headers={"X-API-Key": key["key"]}, json={"new_email": "k@example.com", "password": STRONG_PASSWORD}
    )
    assert by_key.status_code == 403
    # A confirmation token of another account's change does not move this one.
    other_access = bearer(other["tokens"]["access_token"])
    await harness.client.post(
        "/v1/auth/email/change", headers=other_access, json={"new_email": "taken2@example.com", "password": STRONG_PASSWORD}
    )
    foreign = await harness.mailbox.token_for(harness.kernel, "taken2@example.com", "auth.email_change_confirm")
    assert (await harness.client.post("/v1/auth/email/change/confirm", json={"token": foreign})).json()["status"] == "pending"
    assert (await harness.client.get("/v1/me", headers=access)).json()["user"]["email"] == "typo@example.com"


async def test_a_new_address_taken_between_start_and_confirmation_is_409(make_auth):
    harness = await make_auth(account_mail_interval=0)
    body = await signup(harness.client, "slow@example.com")
    access = bearer(body["tokens"]["access_token"])
    await harness.client.post("/v1/auth/email/change", headers=access, json={"new_email": "race@example.com", "password": STRONG_PASSWORD})
    confirm = await harness.mailbox.token_for(harness.kernel, "race@example.com", "auth.email_change_confirm")
    await signup(harness.client, "race@example.com")
    response = await harness.client.post("/v1/auth/email/change/confirm", json={"token": confirm})
    assert response.status_code == 409 and response.json()["errors"][0]["field"] == "new_email"
    assert (await harness.client.get("/v1/me", headers=access)).json()["user"]["email"] == "slow@example.com"


# -- new device -----------------------------------------------------------------------------------


async def test_a_login_from_a_new_address_names_the_device(make_auth):
    recorder = Recorder()
    harness = await make_auth(plugins={"recorder": recorder}, trusted_proxies=["127.0.0.1/32"])
    await signup(harness.client, "device@example.com")
    headers = {"X-Forwarded-For": "203.0.113.9", "User-Agent": "Firefox/128 (Linux)"}
    response = await harness.client.post(
        "/v1/auth/login", json={"email": "device@example.com", "password": STRONG_PASSWORD}, headers=headers
    )
    assert response.status_code == 200
    await wait_until(lambda: recorder.of("auth.new_ip_login"))
    (event,) = recorder.of("auth.new_ip_login")
    assert event["ip"] == "203.0.113.9" and event["user_agent"] == "Firefox/128 (Linux)" and event["method"] == "password"


async def test_a_blocked_account_cannot_use_its_links(make_auth):
    from botcriptofy_auth._accounts import set_blocked

    harness = await make_auth(account_mail_interval=0)
    body = await signup(harness.client, "blocked@example.com")
    await harness.client.post("/v1/auth/password/forgot", json={"email": "blocked@example.com"})
    token = await _reset_token(harness, "blocked@example.com")
    await harness.client.post(
        "/v1/auth/email/change",
        headers=bearer(body["tokens"]["access_token"]),
        json={"new_email": "elsewhere@example.com", "password": STRONG_PASSWORD},
    )
    confirm = await harness.mailbox.token_for(harness.kernel, "elsewhere@example.com", "auth.email_change_confirm")
    await set_blocked(harness.kernel, user_id=body["user"]["id"], blocked=True, reason="abuse", by="test")
    reset = await harness.client.post("/v1/auth/password/reset", json={"token": token, "new_password": NEW_PASSWORD})
    assert reset.status_code == 400 and reset.json()["type"].endswith("/token-invalid")
    moved = await harness.client.post("/v1/auth/email/change/confirm", json={"token": confirm})
    assert moved.status_code == 400 and moved.json()["type"].endswith("/token-invalid")
    # A blocked account gets no new reset link either, and its open links reach nobody.
    assert await harness.kernel.resolve_recipients(harness.mailbox.notifications[-1].recipient) == []
