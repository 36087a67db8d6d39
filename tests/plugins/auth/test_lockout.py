"""Brute force without denial of service: attackers slow their own addresses down; the owner's usual address still logs in."""

from __future__ import annotations

import asyncio
import time

import httpx
import pyotp

from botcriptofy.testing import wait_until
from botcriptofy_auth._state import CACHE_NAMESPACE
from botcriptofy_auth._throttle import _email_hash

from .conftest import Recorder, bearer, login, signup

OWNER = "owner@example.com"


def client_at(harness, address: str) -> httpx.AsyncClient:
    """An HTTP client whose requests come from ``address`` (the peer address the server sees)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=harness.runtime, client=(address, 40000)), base_url="http://testserver")


async def test_five_wrong_passwords_from_an_attacker_do_not_lock_out_the_owner(make_auth):
    recorder = Recorder()
    harness = await make_auth(plugins={"recorder": recorder})
    await signup(harness.client, OWNER)  # the owner's usual address: 127.0.0.1
    async with client_at(harness, "203.0.113.7") as attacker:
        statuses = [(await login(attacker, OWNER, f"guess {i}")).status_code for i in range(5)]
        assert statuses == [401, 401, 401, 401, 429]
        # The attacker's address waits, even with the right password.
        assert (await login(attacker, OWNER)).status_code == 429
    # The owner is not locked out, from their address...
    assert (await login(harness.client, OWNER)).status_code == 200
    # ...nor from another one.
    async with client_at(harness, "198.51.100.20") as cafe:
        assert (await login(cafe, OWNER)).status_code == 200
    await wait_until(lambda: recorder.of("auth.login_throttled"))
    notice = recorder.of("auth.login_throttled")[0]
    assert notice["ip"] == "203.0.113.7" and notice["email"] == OWNER  # the owner is told (notifications consume it)


async def test_the_wait_doubles_with_each_further_failure(make_auth):
    harness = await make_auth(lockout_threshold=2, login_delay_base=0.2, login_delay_max=0.8)
    await signup(harness.client, OWNER)
    cache = harness.kernel.cache()
    key = f"fail-pair:{_email_hash(OWNER)}:203.0.113.7"
    statuses, waits = [], []
    async with client_at(harness, "203.0.113.7") as attacker:
        for attempt in range(5):
            statuses.append((await login(attacker, OWNER, f"guess {attempt}")).status_code)
            record = await cache.get(key, namespace=CACHE_NAMESPACE)
            waits.append(record["wait"])
            await asyncio.sleep(max(0.0, record["until"] - time.time()) + 0.02)  # honour the wait: the next attempt counts again
    assert statuses == [401, 429, 429, 429, 429]
    assert waits == [0, 0.2, 0.4, 0.8, 0.8]  # doubling, up to login_delay_max


async def test_password_spraying_from_one_address_makes_that_address_wait(make_auth):
    harness = await make_auth(address_failure_threshold=3)
    await signup(harness.client, OWNER)
    async with client_at(harness, "203.0.113.8") as sprayer:
        statuses = [(await login(sprayer, f"user{i}@example.com", "Summer2026!")).status_code for i in range(4)]
        assert statuses == [401, 401, 429, 429]
        waiting = await login(sprayer, OWNER)
        assert waiting.status_code == 429 and "from this address" in waiting.json()["detail"]
    assert (await login(harness.client, OWNER)).status_code == 200


async def test_a_distributed_attack_guards_the_account_but_the_owner_still_logs_in(make_auth):
    recorder = Recorder()
    harness = await make_auth(plugins={"recorder": recorder}, account_failure_ceiling=6, lockout_threshold=3)
    body = await signup(harness.client, OWNER)
    answers = []
    for n in range(3):  # a botnet: three addresses, two guesses each
        async with client_at(harness, f"203.0.113.{10 + n}") as bot:
            answers += [(await login(bot, OWNER, f"guess {n}-{i}")).status_code for i in range(2)]
    assert answers == [401, 401, 401, 401, 401, 423]
    await wait_until(lambda: recorder.of("auth.account_locked"))  # the owner is notified
    assert recorder.of("auth.account_locked")[0]["email"] == OWNER

    async with client_at(harness, "198.51.100.30") as stranger:
        right = await login(stranger, OWNER)
        wrong = await login(stranger, OWNER, "another guess")
    # A new address gets the same answer with the right password as with a wrong one.
    assert right.status_code == wrong.status_code == 423
    assert (right.json()["title"], right.json()["type"]) == (wrong.json()["title"], wrong.json()["type"])
    assert right.json()["detail"].split("(")[0] == wrong.json()["detail"].split("(")[0]
    # The owner's usual address is never refused the right password.
    owner = await login(harness.client, OWNER)
    assert owner.status_code == 200, owner.text

    # With TOTP enrolled, the second factor lets the owner in from a new address.
    token = owner.json()["access_token"]
    secret = (await harness.client.post("/v1/auth/totp/enroll", headers=bearer(token))).json()["secret"]
    assert (
        await harness.client.post("/v1/auth/totp/verify", headers=bearer(token), json={"code": pyotp.TOTP(secret).now()})
    ).status_code == 200
    async with client_at(harness, "198.51.100.31") as travelling:
        assert (await login(travelling, OWNER)).status_code == 423
        code = pyotp.TOTP(secret).at(time.time() + 30)
        assert (await login(travelling, OWNER, totp_code=code)).status_code == 200

    # A staff unlock lifts the guard.
    from botcriptofy_auth._accounts import unlock

    await unlock(harness.kernel, user_id=body["user"]["id"])
    async with client_at(harness, "198.51.100.32") as anywhere:
        response = await login(anywhere, OWNER, totp_code=pyotp.TOTP(secret).at(time.time() + 60))
        assert response.status_code == 200, response.text


async def test_a_distributed_attack_on_an_unknown_email_is_answered_like_one_on_an_account(make_auth):
    harness = await make_auth(account_failure_ceiling=6, lockout_threshold=3)
    await signup(harness.client, OWNER)
    answers: dict[str, list[tuple[int, str]]] = {OWNER: [], "ghost@example.com": []}
    for email, answered in answers.items():
        for n in range(4):
            async with client_at(harness, f"203.0.113.{20 + n}") as bot:
                for i in range(2):
                    response = await login(bot, email, f"guess {n}-{i}")
                    answered.append((response.status_code, response.json()["title"]))
    assert answers[OWNER] == answers["ghost@example.com"]
    assert [status for status, _ in answers[OWNER]] == [401, 401, 401, 401, 401, 423, 423, 423]
