"""Redis and two-layer backends on the real Redis: two independent instances stand for two workers."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from botcriptofy.testing import wait_until

SHARED = ["redis", "two-layer"]


@pytest.mark.parametrize("backend", SHARED)
async def test_a_value_set_by_one_worker_is_read_by_another(make_cache, backend):
    first, second = await make_cache(backend=backend), await make_cache(backend=backend)
    await first.set("k", {"price": 1.5}, tags=["prices"], tenant_id="t1")
    assert await second.get("k", tenant_id="t1") == {"price": 1.5}
    assert second.stats("default")["hits_redis"] == 1


@pytest.mark.parametrize("backend", SHARED)
async def test_tag_invalidation_reaches_the_other_worker(make_cache, backend):
    first, second = await make_cache(backend=backend), await make_cache(backend=backend)
    await first.set("a", 1, tags=["plans"])
    await first.set("b", 2, tags=["plans", "prices"])
    await first.set("c", 3, tags=["prices"])
    assert [await second.get(k) for k in "abc"] == [1, 2, 3]  # two-layer: now in second's process too
    started = time.perf_counter()
    await first.invalidate_tags("plans")
    await wait_until(lambda: all(k not in second._local._entries for k in ("default::a", "default::b"))
                     if second._local is not None else True, timeout=2)
    elapsed = time.perf_counter() - started
    assert [await second.get(k) for k in "abc"] == [None, None, 3]
    assert elapsed < 0.5  # milliseconds in practice
    if backend == "two-layer":
        assert second.stats()["_"]["invalidations"]["received"] >= 1


@pytest.mark.parametrize("backend", SHARED)
async def test_tenant_invalidation_reaches_the_other_worker(make_cache, backend):
    first, second = await make_cache(backend=backend), await make_cache(backend=backend)
    await first.set("me", "alice", tenant_id="t1", namespace="users")
    await first.set("orders", [1, 2], tenant_id="t1", namespace="orders")
    await first.set("me", "bob", tenant_id="t2", namespace="users")
    assert await second.get("me", tenant_id="t1", namespace="users") == "alice"
    assert await second.get("orders", tenant_id="t1", namespace="orders") == [1, 2]
    await second.invalidate_tenant("t1")
    await wait_until(lambda: first.memory_entries == 1 if first._local is not None else True, timeout=2)
    assert await first.get("me", tenant_id="t1", namespace="users") is None
    assert await first.get("orders", tenant_id="t1", namespace="orders") is None
    assert await first.get("me", tenant_id="t2", namespace="users") == "bob"


async def test_set_and_delete_reach_the_other_workers_in_process_copy(make_cache):
    first, second = await make_cache(backend="two-layer"), await make_cache(backend="two-layer")
    await first.set("k", "v1")
    assert await second.get("k") == "v1"
    assert second.memory_entries == 1
    await first.set("k", "v2")
    await wait_until(lambda: second.memory_entries == 0, timeout=2)
    assert await second.get("k") == "v2"
    await first.delete("k")
    await wait_until(lambda: second.memory_entries == 0, timeout=2)
    assert await second.get("k") is None


async def test_in_process_copy_lives_no_longer_than_the_redis_entry(make_cache):
    first, second = await make_cache(backend="two-layer", ttl_jitter=0), await make_cache(backend="two-layer")
    await first.set("k", "v", ttl=0.15)
    assert await second.get("k") == "v"
    await asyncio.sleep(0.2)
    assert await second.get("k") is None
    assert await first.get("k") is None


async def test_tag_sets_expire_with_their_entries(make_cache, redis_url, redis_prefix):
    cache = await make_cache(backend="redis", ttl_jitter=0)
    await cache.set("a", 1, ttl=5, tags=["t"])
    await cache.set("b", 1, ttl=50, tags=["t"])
    await cache.set("c", 1, ttl=10, tags=["t"])
    client = aioredis.Redis.from_url(redis_url)
    try:
        ttl = await client.pttl(f"{redis_prefix}t:t")
        assert 45_000 < ttl <= 50_000
        assert await client.smembers(f"{redis_prefix}t:t") == {f"{redis_prefix}v:default::{k}".encode() for k in "abc"}
        await cache.set("d", 1, ttl=0, tags=["t"])  # an entry without expiry keeps its tag set
        assert await client.pttl(f"{redis_prefix}t:t") == -1
    finally:
        await client.aclose()


async def test_stampede_across_two_workers_calls_the_loader_once(make_cache):
    first, second = await make_cache(backend="two-layer"), await make_cache(backend="two-layer")
    calls = 0

    async def loader():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return "expensive"

    results = await asyncio.gather(*(worker.get_or_set("cold", loader, tags=["x"]) for worker in (first, second) for _ in range(50)))
    assert results == ["expensive"] * 100
    assert calls == 1
    _loaded, waited = sorted((first, second), key=lambda w: w.stats("default")["loads"], reverse=True)
    assert waited.stats("default")["lock_waits"] == 1
    assert waited.stats("default")["hits_redis"] == 50


async def test_stampede_on_the_redis_backend_100_callers_one_load(make_cache):
    cache = await make_cache(backend="redis")
    calls = 0

    async def loader():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return 7

    assert await asyncio.gather(*(cache.get_or_set("cold", loader) for _ in range(100))) == [7] * 100
    assert calls == 1
    assert await cache.get("cold") == 7


async def test_a_failed_load_releases_the_lock_for_the_other_worker(make_cache, redis_url, redis_prefix):
    first, second = await make_cache(backend="redis"), await make_cache(backend="redis")

    async def failing():
        await asyncio.sleep(0.05)
        raise RuntimeError("boom")

    async def working():
        return "ok"

    failure = asyncio.ensure_future(first.get_or_set("k", failing))
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    assert await second.get_or_set("k", working) == "ok"
    assert time.perf_counter() - started < 1.0  # did not wait for the lock to expire
    with pytest.raises(RuntimeError):
        await failure
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.exists(f"{redis_prefix}l:default::k") == 0
    finally:
        await client.aclose()


async def test_write_through_and_write_around_reach_every_worker(make_cache):
    namespaces = {"through": {"write_policy": "write-through"}, "around": {"write_policy": "write-around"}}
    first = await make_cache(backend="two-layer", namespaces=namespaces)
    second = await make_cache(backend="two-layer", namespaces=namespaces)
    database: dict[str, object] = {}

    async def writer(write):
        database[write.key] = write.value

    first.register_writer("through", writer)
    first.register_writer("around", writer)
    for namespace in ("through", "around"):
        await first.set(namespace, "old", namespace=namespace)
        assert await second.get(namespace, namespace=namespace) == "old"
        await first.write(namespace, "new", namespace=namespace)
        assert database[namespace] == "new"
    await wait_until(lambda: second.memory_entries == 0, timeout=2)
    assert await second.get("through", namespace="through") == "new"
    assert await second.get("around", namespace="around") is None


async def test_unreadable_entries_are_misses(make_cache, redis_url, redis_prefix):
    cache = await make_cache(backend="redis")
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set(f"{redis_prefix}v:default::k", b"not ours")
    finally:
        await client.aclose()
    assert await cache.get("k") is None
    assert await cache.get_or_set("k", lambda: "fresh") == "fresh"
    assert await cache.get("k") == "fresh"


async def test_json_serializer_round_trips_and_old_entries_stay_readable(make_cache):
    pickled = await make_cache(backend="redis")
    await pickled.set("k", {"a": [1, 2]})
    as_json = await make_cache(backend="redis", serializer="json")
    assert await as_json.get("k") == {"a": [1, 2]}
    await as_json.set("j", {"b": "ç"})
    assert await pickled.get("j") == {"b": "ç"}
    with pytest.raises(TypeError):
        await as_json.set("bad", object())


async def test_a_read_racing_an_invalidation_keeps_no_in_process_copy(make_cache):
    reader, writer = await make_cache(backend="two-layer"), await make_cache(backend="two-layer")
    await writer.set("k", "old")
    await asyncio.sleep(0.05)
    assert reader._client is not None
    real_get = reader._client.get
    release = asyncio.Event()

    async def slow_get(name):
        value = await real_get(name)  # reads "old" ...
        await release.wait()  # ... and answers only after the delete was published
        return value

    reader._client.get = slow_get
    read = asyncio.ensure_future(reader.get("k"))
    await asyncio.sleep(0.05)
    received = reader.stats()["_"]["invalidations"]["received"]
    await writer.delete("k")
    await wait_until(lambda: reader.stats()["_"]["invalidations"]["received"] > received, timeout=2)
    release.set()
    assert await read == "old"  # the read answers what it read ...
    assert reader.memory_entries == 0  # ... but keeps no copy that the delete should have dropped
    reader._client.get = real_get
    assert await reader.get("k") is None
