"""The in-process backend (the embedded default): LRU bound, TTL and jitter, tags, tenants, single-flight."""

from __future__ import annotations

import asyncio

import pytest

from botcriptofy import Cache
from botcriptofy_cache import CacheService, CacheSettings, NoWriterError


@pytest.fixture
async def cache():
    service = CacheService(CacheSettings())
    await service.start()
    yield service
    await service.close()


async def test_satisfies_the_kernel_protocol(cache):
    assert isinstance(cache, Cache)
    assert cache.backend == "memory"
    await cache.set("k", {"a": 1})
    assert await cache.get("k") == {"a": 1}
    assert await cache.get("k", namespace="other") is None
    await cache.delete("k")
    assert await cache.get("k") is None


async def test_lru_bound_evicts_least_recently_used_and_counts_per_namespace():
    cache = CacheService(CacheSettings(memory_max_entries=3))
    await cache.start()
    for key in "abc":
        await cache.set(key, key, namespace="n1")
    assert await cache.get("a", namespace="n1") == "a"  # a is now the most recently used
    await cache.set("d", "d", namespace="n2")
    assert await cache.get("b", namespace="n1") is None
    assert [await cache.get(k, namespace="n1") for k in "ac"] == ["a", "c"]
    assert cache.stats("n1")["evictions"] == 1
    assert cache.stats("n2")["evictions"] == 0
    assert cache.memory_entries == 3
    cache.reconfigure(CacheSettings(memory_max_entries=1))
    assert cache.memory_entries == 1
    await cache.close()


async def test_ttl_expires_and_jitter_only_shortens():
    cache = CacheService(CacheSettings(ttl_jitter=0.5))
    await cache.start()
    await cache.set("short", 1, ttl=0.05)
    assert await cache.get("short") == 1
    await asyncio.sleep(0.08)
    assert await cache.get("short") is None
    assert cache.stats("default")["expirations"] == 1
    namespace = cache._namespace("jittered")
    lives = [cache._ttl(namespace, 100) for _ in range(500)]
    assert all(50 <= life <= 100 for life in lives)
    assert max(lives) - min(lives) > 30  # actually spread
    assert cache._ttl(namespace, 0) == 0  # 0 means no expiry, never jittered
    await cache.close()


async def test_namespace_settings_set_ttl_and_policy():
    cache = CacheService(CacheSettings(default_ttl=60, namespaces={"quotes": {"ttl": 0.05, "ttl_jitter": 0}}))
    await cache.start()
    await cache.set("btc", 1, namespace="quotes")
    await cache.set("btc", 1, namespace="other")
    await asyncio.sleep(0.08)
    assert await cache.get("btc", namespace="quotes") is None
    assert await cache.get("btc", namespace="other") == 1
    await cache.close()


async def test_tags_and_tenants_invalidate_only_their_entries(cache):
    await cache.set("a", 1, tags=["plans"])
    await cache.set("b", 2, tags=["plans", "prices"])
    await cache.set("c", 3, tags=["prices"])
    await cache.invalidate_tags("plans")
    assert [await cache.get(k) for k in "abc"] == [None, None, 3]

    await cache.set("me", "alice", tenant_id="t1", namespace="users")
    await cache.set("me", "bob", tenant_id="t2", namespace="users")
    await cache.set("x", "t1-other", tenant_id="t1", namespace="orders")
    assert await cache.get("me", namespace="users") is None  # a tenant's entry is not the tenantless key
    await cache.invalidate_tenant("t1")
    assert await cache.get("me", tenant_id="t1", namespace="users") is None
    assert await cache.get("x", tenant_id="t1", namespace="orders") is None
    assert await cache.get("me", tenant_id="t2", namespace="users") == "bob"


async def test_invalid_names_are_refused(cache):
    with pytest.raises(ValueError, match="tenant_id"):
        await cache.set("k", 1, tenant_id="a:b")
    with pytest.raises(ValueError, match="tag"):
        await cache.set("k", 1, tags=["@tenant:x"])
    with pytest.raises(ValueError, match="namespace"):
        await cache.get("k", namespace="a:b")


async def test_get_or_set_calls_the_loader_once_for_100_concurrent_callers(cache):
    calls = 0

    async def loader():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return {"computed": True}

    results = await asyncio.gather(*(cache.get_or_set("cold", loader) for _ in range(100)))
    assert calls == 1
    assert all(result == {"computed": True} for result in results)
    assert await cache.get_or_set("cold", loader) == {"computed": True}
    assert calls == 1
    stats = cache.stats("default")
    assert stats["loads"] == 1 and stats["coalesced"] == 99 and stats["hits_local"] == 1


async def test_get_or_set_shares_a_loader_error_and_caches_nothing(cache):
    calls = 0

    async def failing():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("database down")

    results = await asyncio.gather(*(cache.get_or_set("k", failing) for _ in range(10)), return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await cache.get_or_set("k", lambda: "sync loader") == "sync loader"
    assert cache.stats("default")["load_errors"] == 1


async def test_get_or_set_caches_none(cache):
    calls = 0

    def loader():
        nonlocal calls
        calls += 1

    assert await cache.get_or_set("nothing", loader) is None
    assert await cache.get_or_set("nothing", loader) is None
    assert calls == 1


async def test_cancelled_caller_does_not_cancel_the_shared_load(cache):
    started = asyncio.Event()

    async def loader():
        started.set()
        await asyncio.sleep(0.05)
        return "v"

    first = asyncio.ensure_future(cache.get_or_set("k", loader))
    await started.wait()
    second = asyncio.ensure_future(cache.get_or_set("k", loader))
    first.cancel()
    assert await second == "v"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_write_policies_on_the_memory_backend():
    cache = CacheService(CacheSettings(namespaces={
        "through": {"write_policy": "write-through"},
        "around": {"write_policy": "write-around"},
        "behind": {"write_policy": "write-behind"},
    }))
    await cache.start()
    stored: dict[tuple[str, str], object] = {}

    async def writer(write):
        stored[(write.namespace, write.key)] = write.value

    with pytest.raises(NoWriterError, match="register_writer"):
        await cache.write("k", 1, namespace="through")
    for namespace in ("through", "around", "behind"):
        cache.register_writer(namespace, writer)
        await cache.set("k", "old", namespace=namespace)
        await cache.write("k", "new", namespace=namespace)
        assert stored[(namespace, "k")] == "new"
    assert await cache.get("k", namespace="through") == "new"
    assert await cache.get("k", namespace="around") is None
    # Without Redis there is nowhere durable to queue: write-behind writes synchronously.
    assert await cache.get("k", namespace="behind") == "new"
    assert cache.stats("behind")["write_behind"]["synchronous"] == {"memory-backend": 1}
    await cache.close()


async def test_a_writer_error_reaches_the_caller_and_the_cache_keeps_the_old_value(cache):
    async def broken(write):
        raise RuntimeError("constraint violated")

    cache.register_writer("default", broken)
    await cache.set("k", "old")
    with pytest.raises(RuntimeError, match="constraint"):
        await cache.write("k", "new")
    assert await cache.get("k") == "old"


async def test_unregister_writer(cache):
    async def writer(write):
        return None

    unregister = cache.register_writer("default", writer)
    await cache.write("k", 1)
    unregister()
    with pytest.raises(NoWriterError):
        await cache.write("k", 2)
