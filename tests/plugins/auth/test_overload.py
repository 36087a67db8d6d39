"""Overload sheds, it does not queue: past the password-hashing queue a login answers 503 with Retry-After at once."""

from __future__ import annotations

import asyncio

from botcriptofy import ServiceUnavailable
from botcriptofy_auth._passwords import Passwords
from botcriptofy_auth._state import STATE

from .conftest import auth_settings, login, signup


async def test_the_hashing_queue_is_bounded():
    passwords = Passwords(time_cost=1, memory_cost=1024, parallelism=1, concurrency=1, queue_limit=2)
    try:
        await passwords.verify(None, "warm up the dummy hash")
        outcomes = await asyncio.gather(*(passwords.verify(None, f"guess {i}") for i in range(6)), return_exceptions=True)
    finally:
        passwords.close()
    # One hashes, two wait their turn, three are shed at once.
    assert [isinstance(o, ServiceUnavailable) for o in outcomes] == [False, False, False, True, True, True]
    shed = outcomes[-1]
    assert shed.status == 503 and int(shed.headers["Retry-After"]) >= 1 and shed.dependency == "password-hashing"
    assert passwords.shed == 3 and passwords.waiting == 0


async def test_a_shed_login_is_a_503_problem_and_the_next_one_works(make_auth):
    harness = await make_auth(hash_queue_limit=0)
    await signup(harness.client, "busy@example.com")
    passwords = harness.kernel.stash[STATE].passwords
    async with passwords._semaphore, passwords._semaphore:  # every hashing slot busy (hash_concurrency defaults to 2)
        shed = await login(harness.client, "busy@example.com")
        ghost = await login(harness.client, "nobody@example.com", "whatever it is")
    for response in (shed, ghost):
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json" and int(response.headers["retry-after"]) >= 1
        assert response.json()["type"].endswith("/service-unavailable")
    assert (await login(harness.client, "busy@example.com")).status_code == 200
    # The limit is live.
    result = await harness.apply(auth_settings(harness.kernel.database().url, hash_queue_limit=5))
    assert result.applied and passwords.queue_limit == 5
