"""Redis going away and coming back: the local fallback (never unlimited) or fail-closed, then exact limits again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import redis

from botcriptofy import RateLimit
from botcriptofy.testing import wait_until

BURST = 10


def metric(harness: Any, name: str, labels: dict[str, str] | None = None) -> float:
    return harness.kernel.metrics.get_sample_value(name, labels or {}) or 0.0


def degraded(harness: Any) -> bool:
    return metric(harness, "botcriptofy_ratelimit_degraded") == 1


async def burst_of(client: Any, tenant: str, count: int = 30, plan: str = "pro") -> Counter[int]:
    headers = {"x-tenant": tenant, "x-plan": plan}
    responses = await asyncio.gather(*(client.get("/v1/thing", headers=headers) for _ in range(count)))
    return Counter(r.status_code for r in responses)


async def test_redis_stopped_and_restarted_during_load(limited, private_redis, identity, caplog):
    caplog.set_level(logging.WARNING, logger="botcriptofy.ratelimit")
    harness = await limited(
        "redis",
        plugins={"identity": identity},
        redis_url=private_redis.url,
        recovery_interval=0.1,
        redis_timeout=0.3,
        plans={
            "pro": {"rate_per_minute": 60, "burst": BURST, "calls_per_month": 0},
            "internal": {"rate_per_minute": 6000, "burst": 100, "calls_per_month": 8},
        },
    )
    client = harness.client
    # Before the outage: a quota partly used in Redis, and exact limits.
    assert await burst_of(client, "quota", 5, "internal") == {200: 5}
    assert await burst_of(client, "before") == {200: BURST, 429: 30 - BURST}

    seen: Counter[int] = Counter()
    admitted = served_in_outage = 0
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal admitted, served_in_outage
        while not stop.is_set():
            response = await client.get("/v1/thing", headers={"x-tenant": "load", "x-plan": "pro"})
            seen[response.status_code] += 1
            served_in_outage += degraded(harness)
            admitted += response.status_code == 200
            await asyncio.sleep(0.002)

    started = time.monotonic()
    loaders = [asyncio.create_task(load()) for _ in range(4)]
    try:
        await asyncio.sleep(0.2)
        await asyncio.to_thread(private_redis.stop)
        await wait_until(lambda: degraded(harness), timeout=5)

        # During the outage: the local fallback limits exactly (one process), never unlimited.
        assert await burst_of(client, "during") == {200: BURST, 429: 30 - BURST}
        # The quota goes on from the usage last seen in Redis (5 of 8), not from zero.
        assert await burst_of(client, "quota", 10, "internal") == {200: 3, 429: 7}
        assert (await client.get("/-/ready")).json()["status"] != "ok"

        await asyncio.to_thread(private_redis.start)
        await wait_until(lambda: not degraded(harness), timeout=10)
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.gather(*loaders)
    elapsed = time.monotonic() - started

    # After: exact again, and shared (what the fallback counted was added to Redis).
    assert await burst_of(client, "after") == {200: BURST, 429: 30 - BURST}
    assert await burst_of(client, "quota", 5, "internal") == {429: 5}
    with redis.Redis.from_url(private_redis.url) as direct:
        assert int(direct.hget(f"{harness.kernel.settings_for('ratelimit').key_prefix}q:quota", "n")) == 8

    assert set(seen) <= {200, 429}, seen  # no request failed
    assert seen[429] > 0 and served_in_outage > 0
    # Never unlimited: at most one full burst per phase (Redis, fallback, Redis) plus the refill at 1 per second.
    assert admitted <= 3 * BURST + elapsed + 1, (admitted, elapsed)
    assert metric(harness, "botcriptofy_ratelimit_backend_switches_total", {"to": "fallback"}) == 1
    assert metric(harness, "botcriptofy_ratelimit_backend_switches_total", {"to": "redis"}) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("unreachable" in m and "local fallback" in m for m in messages)
    assert any("reachable again" in m for m in messages)


async def test_fail_closed_answers_503_until_redis_is_back(limited, private_redis):
    harness = await limited("redis", redis_url=private_redis.url, outage_mode="closed", recovery_interval=0.1, redis_timeout=0.3)
    client = harness.client
    limiter = harness.kernel.rate_limiter()
    assert (await client.get("/v1/thing")).status_code == 200
    private_redis.stop()
    refused = await client.get("/v1/thing")
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    assert "outage_mode is 'closed'" in refused.json()["detail"]
    assert not (await limiter.hit(RateLimit("login:ip:x", 5, 60, 5))).allowed  # the login guard fails closed too
    assert metric(harness, "botcriptofy_ratelimit_backend_switches_total", {"to": "closed"}) == 1
    private_redis.start()
    await wait_until(lambda: not degraded(harness), timeout=10)
    assert (await client.get("/v1/thing")).status_code == 200


async def test_redis_down_at_start_up_then_recovers(limited, private_redis):
    private_redis.stop()
    harness = await limited(
        "redis", redis_url=private_redis.url, recovery_interval=0.1, redis_timeout=0.3, anonymous={"rate_per_minute": 1, "burst": 3}
    )
    assert degraded(harness)
    assert [(await harness.client.get("/v1/thing")).status_code for _ in range(4)] == [200, 200, 200, 429]
    private_redis.start()
    await wait_until(lambda: not degraded(harness), timeout=10)
    assert [(await harness.client.get("/v1/thing")).status_code for _ in range(4)] == [200, 200, 200, 429]


async def test_flushed_script_is_loaded_again(limited, private_redis):
    harness = await limited("redis", redis_url=private_redis.url, anonymous={"rate_per_minute": 1, "burst": 3})
    assert (await harness.client.get("/v1/thing")).status_code == 200
    with redis.Redis.from_url(private_redis.url) as direct:
        direct.script_flush()
    assert [(await harness.client.get("/v1/thing")).status_code for _ in range(3)] == [200, 200, 429]
    assert metric(harness, "botcriptofy_ratelimit_backend_switches_total", {"to": "fallback"}) == 0
