"""Redis errors of any kind: the cache answers from its in-process layer and loaders, counts them, and recovers.

A fault is injected where the cache meets redis-py (any exception type, as a client bug would
raise); a real Redis server is paused with ``CLIENT PAUSE``; and, end to end, ``GET /v1/me`` keeps
answering while the cache's Redis fails.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from botcriptofy.testing import wait_until

from .test_cache_entry_trust import first_party

ODD_ERRORS = [
    AttributeError("'NoneType' object has no attribute 'send_packed_command'"),
    RuntimeError("unexpected state in the connection pool"),
    KeyError("a bug deep in the client"),
]


class Fault:
    """Make every connection pool of a cache raise ``error`` when a connection is checked out (while ``on``)."""

    def __init__(self, cache: Any, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
        self.on = True
        self.calls = 0
        for client in (cache._client, cache._background):
            self._patch(client.connection_pool, monkeypatch, error)

    def _patch(self, pool: Any, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
        original = pool.get_connection

        async def get_connection(*args: Any, **kwargs: Any) -> Any:
            if self.on:
                self.calls += 1
                raise error
            return await original(*args, **kwargs)

        monkeypatch.setattr(pool, "get_connection", get_connection)


@pytest.mark.parametrize("error", ODD_ERRORS, ids=lambda e: type(e).__name__)
async def test_any_exception_from_the_client_degrades_to_the_in_process_layer(make_cache, monkeypatch, error):
    behind = {"orders": {"write_policy": "write-behind"}}
    cache = await make_cache(backend="two-layer", reconnect_interval=0.05, namespaces=behind)
    other = await make_cache(backend="two-layer", reconnect_interval=0.05, namespaces=behind)
    await cache.set("hot", "cached before")
    await cache.set("stale", "old")
    assert await other.get("stale") == "old"
    written: list[str] = []

    async def writer(write):
        written.append(write.key)

    cache.register_writer("orders", writer)
    fault = Fault(cache, monkeypatch, error)

    assert await cache.get("hot") == "cached before"  # in-process copy
    assert await cache.get("cold") is None
    assert fault.calls >= 1 and not cache.redis_available
    assert await cache.get_or_set("loaded", lambda: "from the loader") == "from the loader"
    await cache.set("stale", "new")  # remembered as an invalidation
    await cache.delete("gone")
    await cache.invalidate_tags("some-tag")
    await cache.invalidate_tenant("t1")
    await cache.write("o1", {"qty": 1}, namespace="orders")  # written through synchronously
    assert written == ["o1"]
    stats = cache.stats()["_"]
    assert stats["redis_errors"] >= 1 and stats["redis_switches"]["down"] == 1
    with pytest.raises(Exception, match="down"):
        await cache.ping()

    fault.on = False
    await wait_until(lambda: cache.redis_available, timeout=5)  # the probe survived the odd error
    assert cache.stats()["_"]["redis_switches"] == {"down": 1, "up": 1}
    assert await other.get("stale") is None  # the remembered invalidation was replayed
    await cache.set("after", 1)
    assert await other.get("after") == 1


async def test_a_paused_redis_is_an_outage_not_a_hang(redis_server, make_cache):
    cache = await make_cache(backend="redis", redis_url=redis_server.url, redis_timeout=0.2, reconnect_interval=0.05)
    await cache.set("k", 1)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.execute_command("CLIENT", "PAUSE", 1500, "ALL")
    finally:
        await client.aclose()
    assert await cache.get_or_set("k2", lambda: "loaded") == "loaded"
    for _ in range(5):
        assert await cache.get("k") is None  # a miss while Redis is away
    assert not cache.redis_available
    # One timeout marked Redis down; the calls after it did not wait on Redis again.
    assert cache.stats()["_"]["redis_errors"] == 1
    await wait_until(lambda: cache.redis_available, timeout=10)
    assert await cache.get("k") == 1


async def test_get_me_answers_while_the_caches_redis_fails(kernel_harness, tmp_path, redis_url, redis_prefix, monkeypatch):
    harness = await first_party(kernel_harness, tmp_path, redis_url, redis_prefix, reconnect_interval=0.05)
    client = harness.client
    account = {"email": "cy@example.com", "password": "correct horse battery staple", "name": "Cy", "account_type": "trader"}
    signed_up = await client.post("/v1/auth/signup", json=account)
    headers = {"Authorization": f"Bearer {signed_up.json()['tokens']['access_token']}"}
    me = await client.get("/v1/me", headers=headers)
    assert me.status_code == 200
    cache = harness.kernel.cache()
    fault = Fault(cache, monkeypatch, AttributeError("'NoneType' object has no attribute 'read_response'"))
    for _ in range(3):
        again = await client.get("/v1/me", headers=headers)
        assert again.status_code == 200 and again.json() == me.json()  # the loaders (the database) answer
    assert fault.calls >= 1 and cache.stats()["_"]["redis_errors"] >= 1
    fault.on = False
    await wait_until(lambda: cache.redis_available, timeout=5)
    assert (await client.get("/v1/me", headers=headers)).status_code == 200
