"""The plugin in a kernel: the cache_backend hook, settings and live reload, health checks, metrics, other plugins' use."""

from __future__ import annotations

import socket

from prometheus_client import generate_latest

import botcriptofy_cache
from botcriptofy import Cache, Route, hookimpl
from botcriptofy.testing import wait_until


def cache_settings(redis_url: str, prefix: str, **extra):
    return {"cache": {"backend": "two-layer", "redis_url": redis_url, "prefix": prefix, "redis_timeout": 2.0, **extra}}


async def test_default_is_the_in_memory_backend(kernel_harness):
    harness = await kernel_harness(plugins={"cache": botcriptofy_cache})
    cache = harness.kernel.cache()
    assert isinstance(cache, Cache)
    assert isinstance(cache, botcriptofy_cache.CacheService)
    assert cache.backend == "memory"
    await cache.set("k", 1)
    assert await cache.get("k") == 1
    ready = (await harness.client.get("/-/ready")).json()
    assert ready["status"] == "ok" and not any(name.startswith("cache.") for name in ready["checks"])


async def test_tag_and_tenant_invalidation_reach_another_kernel(kernel_harness, redis_url, redis_prefix):
    settings = cache_settings(redis_url, redis_prefix)
    one = await kernel_harness(plugins={"cache": botcriptofy_cache}, settings=settings)
    two = await kernel_harness(plugins={"cache": botcriptofy_cache}, settings=settings)
    a, b = one.kernel.cache(), two.kernel.cache()
    assert a is not b
    await a.set("plan", {"name": "pro"}, tags=["plans"])
    await a.set("me", {"user": "alice"}, tenant_id="t1", namespace="users")
    await a.set("me", {"user": "bob"}, tenant_id="t2", namespace="users")
    assert await b.get("plan") == {"name": "pro"}
    assert await b.get("me", tenant_id="t1", namespace="users") == {"user": "alice"}
    assert b.memory_entries == 2

    await a.invalidate_tags("plans")
    await wait_until(lambda: b.memory_entries == 1, timeout=2)
    assert await b.get("plan") is None

    await b.invalidate_tenant("t1")
    await wait_until(lambda: a.memory_entries == 1, timeout=2)
    assert await a.get("me", tenant_id="t1", namespace="users") is None
    assert await a.get("me", tenant_id="t2", namespace="users") == {"user": "bob"}


async def test_live_keys_reconfigure_and_others_restart_keeping_writers(kernel_harness, redis_url, redis_prefix):
    harness = await kernel_harness(plugins={"cache": botcriptofy_cache})
    first = harness.kernel.cache()
    await first.set("k", 1)

    live = {"default_ttl": 60, "serializer": "json", "namespaces": {"orders": {"write_policy": "write-around"}}}
    result = await harness.apply({"cache": live})
    assert result.changes["reconfigured"] == ["cache"]
    assert harness.kernel.cache() is first
    assert await first.get("k") == 1  # the in-process layer survives a live change
    written = []

    async def writer(write):
        written.append(write.key)

    first.register_writer("orders", writer)
    await first.write("o1", 1, namespace="orders")
    assert written == ["o1"] and await first.get("o1", namespace="orders") is None

    result = await harness.apply(cache_settings(redis_url, redis_prefix, namespaces={"orders": {"write_policy": "write-through"}}))
    assert result.changes["restarted"] == ["cache"]
    second = harness.kernel.cache()
    assert second is not first and second.backend == "two-layer"
    await second.write("o2", 2, namespace="orders")  # the writer registered before the restart still applies
    assert written == ["o1", "o2"] and await second.get("o2", namespace="orders") == 2
    await wait_until(lambda: first._closed, timeout=5)


async def test_invalid_settings_are_refused_naming_the_key(kernel_harness):
    harness = await kernel_harness(plugins={"cache": botcriptofy_cache})
    result = await harness.apply({"cache": {"backend": "memcached"}})
    assert not result.applied and "cache.backend" in result.error
    result = await harness.apply({"cache": {"namespaces": {"a:b": {}}}})
    assert not result.applied and "cache.namespaces" in result.error
    result = await harness.apply({"cache": {"namespaces": {"orders": {"write_policy": "write-sideways"}}}})
    assert not result.applied and "cache.namespaces.orders.write_policy" in result.error


async def test_health_check_reports_redis(kernel_harness, redis_url, redis_prefix):
    harness = await kernel_harness(plugins={"cache": botcriptofy_cache}, settings=cache_settings(redis_url, redis_prefix))
    response = await harness.client.get("/-/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["cache.redis"]["status"] == "ok"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    harness = await kernel_harness(plugins={"cache": botcriptofy_cache},
                                   settings=cache_settings(f"redis://127.0.0.1:{port}/0", redis_prefix))
    response = await harness.client.get("/-/ready")
    assert response.status_code == 503
    check = response.json()["checks"]["cache.redis"]
    assert check["status"] == "fail" and "is down" in check["error"]
    assert await harness.kernel.cache().get_or_set("k", lambda: "still answering") == "still answering"


async def test_metrics_are_registered_per_namespace(kernel_harness, redis_url, redis_prefix):
    harness = await kernel_harness(plugins={"cache": botcriptofy_cache}, settings=cache_settings(redis_url, redis_prefix))
    cache = harness.kernel.cache()
    await cache.set("k", 1, namespace="prices")
    await cache.get("k", namespace="prices")
    await cache.get("missing", namespace="prices")
    text = generate_latest(harness.runtime.metrics).decode()
    assert 'botcriptofy_cache_hits_total{layer="memory",namespace="prices"} 1.0' in text
    assert 'botcriptofy_cache_misses_total{namespace="prices"} 1.0' in text
    assert 'botcriptofy_cache_evictions_total{namespace="prices"} 0.0' in text
    assert 'botcriptofy_cache_operation_seconds_count{namespace="prices",operation="get"} 2.0' in text
    assert 'botcriptofy_cache_redis_up{backend="two-layer"} 1.0' in text
    assert "botcriptofy_cache_memory_entries 1.0" in text

    # A restart (backend change) keeps the collector and its counters.
    await harness.apply({"cache": {"prefix": redis_prefix}})
    await harness.kernel.cache().get("x", namespace="prices")
    text = generate_latest(harness.runtime.metrics).decode()
    assert 'botcriptofy_cache_misses_total{namespace="prices"} 2.0' in text
    assert 'botcriptofy_cache_redis_up{backend="memory"} 0.0' in text


class Profiles:
    """Another plugin: it reaches the cache only through kernel.cache(), registers a writer at start-up and caches a route."""

    def __init__(self) -> None:
        self.database: dict[str, dict[str, str]] = {"alice": {"name": "Alice"}}
        self.reads = 0

    @hookimpl
    async def startup(self, kernel):
        async def persist(write):
            self.database[write.key] = write.value

        kernel.cache().register_writer("profiles", persist)

    @hookimpl
    def register_routes(self, kernel):
        async def show(request):
            user = request.path_params["user"]

            async def load():
                self.reads += 1
                return self.database.get(user)

            cache = kernel.cache()
            return {"profile": await cache.get_or_set(user, load, namespace="profiles", tenant_id="t1")}

        async def rename(request):
            user = request.path_params["user"]
            await kernel.cache().write(user, {"name": request.query_params["name"]}, namespace="profiles", tenant_id="t1")
            return {"ok": True}

        return [Route("/profiles/{user}", show), Route("/profiles/{user}/rename", rename, methods=["POST"])]


async def test_another_plugin_uses_the_cache_through_the_kernel(kernel_harness):
    profiles = Profiles()
    harness = await kernel_harness(plugins={"cache": botcriptofy_cache, "profiles": profiles})
    for _ in range(3):
        assert (await harness.client.get("/profiles/alice")).json() == {"profile": {"name": "Alice"}}
    assert profiles.reads == 1
    assert (await harness.client.post("/profiles/alice/rename?name=Alicia")).status_code == 200
    assert profiles.database["alice"] == {"name": "Alicia"}
    assert (await harness.client.get("/profiles/alice")).json() == {"profile": {"name": "Alicia"}}
    assert profiles.reads == 1
