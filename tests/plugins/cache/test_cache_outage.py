"""Redis outages: a Redis server of the test's own is killed mid-run and started again."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from botcriptofy.testing import wait_until

BEHIND = {"orders": {"write_policy": "write-behind"}}


async def test_requests_keep_answering_and_the_cache_recovers(redis_server, make_cache, caplog):
    caplog.set_level(logging.INFO, logger="botcriptofy.cache")
    settings = {"backend": "two-layer", "redis_url": redis_server.url, "prefix": "outage:", "namespaces": BEHIND}
    web, other = await make_cache(**settings), await make_cache(**settings)
    rows: dict[str, tuple[object, int]] = {}
    gate = asyncio.Event()

    async def writer(write):
        if write.write_behind:
            await gate.wait()  # the flusher is slow: writes are pending in the stream when Redis dies
        current = rows.get(write.key)
        if current is None or current[1] < write.version:
            rows[write.key] = (write.value, write.version)

    web.register_writer("orders", writer)
    acknowledged: dict[str, int] = {}

    async def write(key: str, n: int) -> None:
        await web.write(key, n, namespace="orders")
        acknowledged[key] = n

    await web.set("hot", "cached before", tags=["hot"])
    await web.set("stale", "old")
    assert await other.get("stale") == "old"
    for n in range(20):
        await write(f"o{n % 10}", n)
    for n in range(5):
        await write(f"only-before-{n}", n)  # written only before the outage: must come back from the stream
    assert web.stats("orders")["write_behind"]["enqueued"] == 25

    await redis_server.kill()
    loads = 0

    async def loader():
        nonlocal loads
        loads += 1
        return "from the database"

    # Every request still answers: from the in-process layer, the loader, and synchronous writes.
    for n in range(20, 40):
        assert await web.get("hot") == "cached before"
        assert await web.get_or_set(f"cold-{n}", loader) == "from the database"
        await web.set(f"new-{n}", n)
        assert await web.get(f"new-{n}") == n
        await write(f"o{n % 10}", n)
        assert await other.get("nothing") is None
    await web.set("stale", "new")  # only in web's process while Redis is down; remembered as an invalidation
    await web.invalidate_tags("hot")
    assert await web.get("hot") is None
    assert loads == 20
    assert not web.redis_available
    stats = web.stats("orders")["write_behind"]
    assert stats["synchronous"]["redis-down"] == 20
    assert web.stats()["_"]["redis_switches"]["down"] == 1
    assert any("unavailable" in r.getMessage() for r in caplog.records)

    await redis_server.start()
    await wait_until(lambda: web.redis_available and other.redis_available, timeout=10)
    assert web.stats()["_"]["redis_switches"] == {"down": 1, "up": 1}
    assert any("available again" in r.getMessage() for r in caplog.records)
    assert await other.get("stale") is None  # web replayed the invalidation it remembered
    assert await other.get("hot") is None

    # The pending writes survived in Redis (append-only file): replayed now, without overwriting newer ones.
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.xlen("outage:wb:orders") == 25
    finally:
        await client.aclose()
    assert not any(key.startswith("only-before") for key in rows)
    gate.set()
    assert await web.drain("orders", timeout=15) == 0
    assert {key: value for key, (value, _) in rows.items()} == acknowledged

    # And two-layer caching works again across workers.
    await web.set("after", 1, tags=["a"])
    assert await other.get("after") == 1
    await web.invalidate_tags("a")
    await wait_until(lambda: "default::after" not in other._local._entries, timeout=2)
    assert await other.get("after") is None


async def test_starting_while_redis_is_down_serves_and_connects_later(redis_server, make_cache):
    await redis_server.kill()
    cache = await make_cache(backend="two-layer", redis_url=redis_server.url, prefix="late:")
    assert not cache.redis_available
    assert await cache.get_or_set("k", lambda: 1) == 1
    try:
        await cache.ping()
    except ConnectionError as error:
        assert "is down" in str(error)
    else:
        raise AssertionError("ping should fail while Redis is down")
    await redis_server.start()
    await wait_until(lambda: cache.redis_available, timeout=10)
    assert await cache.ping()
    await cache.set("k2", 2)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.exists("late:v:default::k2") == 1
    finally:
        await client.aclose()
