"""The Redis ACL of docs/operations.md: a user confined to the service's prefix runs the cache and the rate limiter.

A Redis server of the test's own gets the documented ``ACL SETUSER`` line; the cache (two-layer,
with tags, tenants and a write-behind namespace) and the rate limiter then work through that user,
who cannot read or write outside the prefix nor run administrative commands.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from botcriptofy.testing import wait_until
from botcriptofy_ratelimit import RateLimitSettings
from botcriptofy_ratelimit._backend import RedisBackend
from botcriptofy_ratelimit._core import GCRA, NO_PENALTY, Check, interval_of
from botcriptofy_ratelimit._metrics import Metrics

OPERATIONS = Path(__file__).resolve().parents[3] / "docs" / "operations.md"


def documented_acl() -> list[str]:
    """The ``ACL SETUSER`` command shown in the operations guide, split into arguments."""
    text = OPERATIONS.read_text(encoding="utf-8")
    match = re.search(r"^\s*(ACL SETUSER botcriptofy .+)$", text, re.MULTILINE)
    assert match, "docs/operations.md shows no 'ACL SETUSER botcriptofy ...' line"
    return match.group(1).split()


async def test_the_documented_acl_is_enough_and_confines_the_service(redis_server, make_cache):
    command = documented_acl()
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        password = "x" * 40
        await admin.execute_command(*[f">{password}" if part.startswith(">") else part for part in command])
        await admin.set("other:secret", "not yours")
    finally:
        await admin.aclose()
    url = f"redis://botcriptofy:{password}@127.0.0.1:{redis_server.port}/0"

    behind = {"orders": {"write_policy": "write-behind"}}
    one = await make_cache(backend="two-layer", redis_url=url, prefix="bcf:cache:", namespaces=behind)
    two = await make_cache(backend="two-layer", redis_url=url, prefix="bcf:cache:", namespaces=behind)
    assert one.redis_available and two.redis_available
    await one.set("plan", {"name": "pro"}, tags=["plans"], tenant_id="t1")
    assert await two.get("plan", tenant_id="t1") == {"name": "pro"}
    await one.invalidate_tags("plans")
    await wait_until(lambda: two.memory_entries == 0, timeout=5)  # the invalidation message reached the other worker
    assert await two.get("plan", tenant_id="t1") is None
    await one.set("me", {"n": 1}, tenant_id="t2")
    await two.invalidate_tenant("t2")
    await wait_until(lambda: one.memory_entries == 0, timeout=5)
    assert await one.get_or_set("me", lambda: {"n": 2}, tenant_id="t2") == {"n": 2}
    written: list[str] = []

    async def writer(write):
        written.append(write.key)

    one.register_writer("orders", writer)
    await one.write("o1", {"qty": 1}, namespace="orders")
    assert await one.drain("orders", timeout=10) == 0 and written == ["o1"]
    assert one.stats()["_"]["redis_errors"] == 0 and one.redis_available

    backend = RedisBackend(RateLimitSettings(backend="redis", redis_url=url, key_prefix="bcf:rl:"), Metrics())
    await backend.start()
    try:
        check = Check(GCRA, "bcf:rl:ip:203.0.113.9", interval_of(60, 60), 2)
        assert [(await backend.hit([check], NO_PENALTY)).allowed for _ in range(3)] == [True, True, False]
        assert not backend.degraded
    finally:
        await backend.close()

    confined = aioredis.Redis.from_url(url)
    try:
        with pytest.raises(NoPermissionError):
            await confined.get("other:secret")
        with pytest.raises(NoPermissionError):
            await confined.flushall()
        with pytest.raises(NoPermissionError):
            await confined.config_get("*")
    finally:
        await confined.aclose()
