"""Probes are not limited by default, and a penalised client recovers once its rate is back under the limit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from botcriptofy_ratelimit import RateLimitSettings
from botcriptofy_ratelimit._backend import RedisBackend
from botcriptofy_ratelimit._core import GCRA, US, Check, MemoryStore, PenaltyParams, interval_of
from botcriptofy_ratelimit._metrics import Metrics

PROBES = ["/-/health", "/-/ready", "/metrics"]


def test_probes_are_exempt_by_default():
    assert RateLimitSettings().exempt_paths == PROBES


async def test_probes_are_never_limited_out_of_the_box(backend, limited):
    """A load balancer probing many times a second from one address is never refused (nor penalised by 404s)."""
    harness = await limited(backend, flood_guard={"rate_per_minute": 60, "burst": 2}, anonymous={"rate_per_minute": 60, "burst": 2})
    client = harness.client
    for _ in range(10):
        for path in PROBES:
            response = await client.get(path)
            assert response.status_code != 429, path
            assert "ratelimit-limit" not in response.headers
    assert [(await client.get("/v1/thing")).status_code for _ in range(3)] == [200, 200, 429]  # other paths still are


async def test_probes_can_be_limited_when_configured(limited):
    harness = await limited("memory", exempt_paths=[], anonymous={"rate_per_minute": 1, "burst": 2})
    assert [(await harness.client.get("/-/health")).status_code for _ in range(3)] == [200, 200, 429]


async def steady(client: Any, rate: float, seconds: float, headers: dict[str, str] | None = None) -> list[tuple[float, int]]:
    """Send one request at a time for ``seconds``, never faster than ``rate`` per second; return (time, status).

    A slow response delays the next request rather than bunching the following ones together, so
    a loaded machine only makes the client slower, never burstier.
    """
    loop = asyncio.get_running_loop()
    start = next_at = loop.time()
    seen: list[tuple[float, int]] = []
    while next_at - start < seconds:
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = loop.time()
        response = await client.get("/v1/thing", headers=headers or {})
        seen.append((sent - start, response.status_code))
        next_at = max(next_at + 1 / rate, sent + 1 / rate)
    return seen


def recovered_at(seen: list[tuple[float, int]], window: int) -> float | None:
    """When the run of ``window`` consecutive admitted requests that lasts to the end began (None: never)."""
    tail = 0
    for _, status in reversed(seen):
        if status != 200:
            break
        tail += 1
    if tail < window:
        return None
    return seen[len(seen) - tail][0]


async def test_a_flooding_client_recovers_once_its_rate_is_back_under_the_limit(backend, limited):
    """Reproduces the report: after a burst of 429s, a client sending just under its limit never got through again.

    Each refusal added penalty points faster than they decayed, so the tightened limit kept refusing
    and the score never came down. Only refusals at the configured limit add points now: under it,
    the score decays and the client is back to its full limit within
    ``half_life * log2(max_score / threshold)`` (2 s here), plus the time to refill its bucket.
    """
    harness = await limited(
        backend,
        flood_guard={"rate_per_minute": 600, "burst": 5},  # 10 per second from one address
        anonymous={"rate_per_minute": 60_000, "burst": 1_000},
        # Points for a refusal (2) outweigh the decay: before the fix a client at 80 % of its limit stayed penalised.
        penalty={"threshold": 2, "half_life": 1.0, "max_score": 8, "min_factor": 0.1, "weights": {"401": 1, "404": 1, "429": 2}},
    )
    client = harness.client
    flood = await asyncio.gather(*(client.get("/v1/thing") for _ in range(60)))
    assert sum(r.status_code == 429 for r in flood) >= 50

    seen = await steady(client, rate=8, seconds=6)  # 80 % of the limit
    began = recovered_at(seen, window=16)  # two seconds of nothing but 200s, to the end of the run
    assert began is not None, f"never recovered: {[status for _, status in seen]}"
    assert began < 4.0, (began, [status for _, status in seen])
    assert any(status == 200 for _, status in seen[:8])  # partly admitted (at the tightened rate) from the start


PARAMS = PenaltyParams(enabled=True, half_life=3600 * US, threshold=2, min_factor=0.1, max_score=8, deny_weight=1)


async def _score(redis_url: str, key: str) -> float:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return float(await client.hget(key, "s") or 0)
    finally:
        await client.aclose()


@pytest.mark.parametrize("where", ["memory", "lua"])
async def test_only_refusals_over_the_configured_limit_earn_points(where, redis_url, redis_prefix):
    """6 per second, burst 4; a score of 6 against a threshold of 2 tightens it to 2 per second, burst 1."""
    used = Check(GCRA, f"{redis_prefix}used", interval_of(6, 1), 4, penalty=f"{redis_prefix}p", name="plan")
    fresh = Check(GCRA, f"{redis_prefix}fresh", interval_of(6, 1), 4, penalty=f"{redis_prefix}p", name="plan")
    store = MemoryStore()
    backend = RedisBackend(RateLimitSettings(backend="redis", redis_url=redis_url, key_prefix=redis_prefix), Metrics())
    await backend.start()

    async def hit(check: Check) -> bool:
        if where == "memory":
            return store.hit([check], PARAMS).allowed
        return (await backend.hit([check], PARAMS)).allowed

    async def score() -> float:
        if where == "memory":
            return store.score(used.penalty or "", PARAMS.half_life, store.clock())
        return await _score(redis_url, used.penalty or "")

    async def penalize(points: float) -> None:
        if where == "memory":
            store.penalize([used.penalty or ""], points, PARAMS)
        else:
            await backend.penalize([used.penalty or ""], points, PARAMS)

    try:
        assert [await hit(used) for _ in range(5)] == [True] * 4 + [False]
        assert await score() == pytest.approx(1, abs=0.01)  # refused over the configured limit: a point
        await penalize(5)
        assert [await hit(fresh) for _ in range(3)] == [True, False, False]  # the tightened burst of 1
        assert await score() == pytest.approx(6, abs=0.01)  # refused only by the tightening: no points
    finally:
        await backend.close()
