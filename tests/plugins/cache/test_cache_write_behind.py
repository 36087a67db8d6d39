"""Write-behind: acknowledged writes live in a Redis stream until a writer persisted them, whatever happens to the worker."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from botcriptofy.testing import wait_until

BEHIND = {"orders": {"write_policy": "write-behind"}}
KILLED_WRITER = Path(__file__).with_name("_killed_writer.py")


class Database:
    """A system of record in a dict: keeps the newest version of each key, like an upsert guarded by version."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str | None, str], tuple[object, int]] = {}
        self.calls: list[object] = []
        self.gate: asyncio.Event | None = None

    async def writer(self, write) -> None:
        if write.write_behind and self.gate is not None:
            await self.gate.wait()
        self.calls.append(write)
        current = self.rows.get((write.tenant_id, write.key))
        if current is None or current[1] < write.version:
            self.rows[(write.tenant_id, write.key)] = (write.value, write.version)

    def value(self, key: str, tenant_id: str | None = None) -> object:
        row = self.rows.get((tenant_id, key))
        return row[0] if row else None


async def test_write_is_acknowledged_cached_and_flushed(make_cache):
    cache = await make_cache(backend="two-layer", namespaces=BEHIND)
    database = Database()
    cache.register_writer("orders", database.writer)
    for n in range(20):
        await cache.write(f"o{n}", {"n": n}, namespace="orders", tenant_id="t1")
    assert await cache.get("o3", namespace="orders", tenant_id="t1") == {"n": 3}
    assert await cache.drain("orders", timeout=5) == 0
    assert {k: database.value(k, "t1") for k in ("o0", "o19")} == {"o0": {"n": 0}, "o19": {"n": 19}}
    assert all(write.write_behind and write.namespace == "orders" for write in database.calls)
    stats = cache.stats("orders")["write_behind"]
    assert stats["enqueued"] == 20 and stats["flushed"] == 20 and stats["synchronous"] == {}
    await wait_until(lambda: cache.stats("orders")["write_behind"]["backlog"] == 0, timeout=2)


async def test_writes_of_one_key_are_coalesced_and_the_newest_wins(make_cache):
    cache = await make_cache(backend="redis", namespaces=BEHIND)
    for n in range(30):
        await cache.write("hot", n, namespace="orders")
    database = Database()
    cache.register_writer("orders", database.writer)  # the flusher starts reading now: one batch holds all 30
    assert await cache.drain("orders", timeout=5) == 0
    assert database.value("hot") == 29
    assert len(database.calls) < 30
    assert cache.stats("orders")["write_behind"]["flushed"] == 30


async def test_another_worker_flushes_what_a_worker_without_writer_acknowledged(make_cache):
    web = await make_cache(backend="two-layer", namespaces=BEHIND)
    flusher = await make_cache(backend="two-layer", namespaces=BEHIND)
    database = Database()
    flusher.register_writer("orders", database.writer)
    for n in range(10):
        await web.write(f"o{n}", n, namespace="orders")
    assert await flusher.drain("orders", timeout=5) == 0
    assert [database.value(f"o{n}") for n in range(10)] == list(range(10))


async def test_a_failing_writer_is_retried_and_a_poison_write_is_dead_lettered(make_cache, redis_url, redis_prefix):
    cache = await make_cache(backend="redis", namespaces=BEHIND, write_behind_max_attempts=3)
    attempts: dict[str, int] = {}
    stored: dict[str, object] = {}

    async def flaky(write):
        attempts[write.key] = attempts.get(write.key, 0) + 1
        assert write.attempt == attempts[write.key]
        if write.key == "poison" or attempts[write.key] < 2:
            raise RuntimeError(f"cannot store {write.key}")
        stored[write.key] = write.value

    cache.register_writer("orders", flaky)
    await cache.write("good", 1, namespace="orders")
    await cache.write("poison", 2, namespace="orders")
    assert await cache.drain("orders", timeout=10) == 0
    assert stored == {"good": 1}
    assert attempts == {"good": 2, "poison": 3}
    stats = cache.stats("orders")["write_behind"]
    assert stats["dead_lettered"] == 1 and stats["failures"] == 4
    client = aioredis.Redis.from_url(redis_url)
    try:
        [(_, fields)] = await client.xrange(f"{redis_prefix}wb-dead:orders")
    finally:
        await client.aclose()
    assert fields[b"k"] == b"poison" and fields[b"reason"] == b"too many failed attempts"


async def test_a_full_backlog_makes_writes_synchronous(make_cache):
    cache = await make_cache(backend="two-layer", namespaces=BEHIND, write_behind_max_backlog=5)
    database = Database()
    database.gate = asyncio.Event()  # the flusher's writes hang: the backlog grows
    cache.register_writer("orders", database.writer)
    for n in range(12):
        await cache.write("k", n, namespace="orders")
        await cache.write(f"k{n}", n, namespace="orders")
    stats = cache.stats("orders")["write_behind"]
    assert stats["enqueued"] == 5
    assert stats["synchronous"] == {"backlog-full": 19}
    assert database.value("k") == 11  # written synchronously, before the flusher's older writes of k
    database.gate.set()
    assert await cache.drain("orders", timeout=5) == 0
    assert database.value("k") == 11  # the older queued writes of k did not overwrite it
    assert all(database.value(f"k{n}") == n for n in range(12))


@pytest.mark.parametrize("mode", ["unread", "stuck"])
async def test_a_killed_workers_backlog_is_replayed(make_cache, redis_url, redis_prefix, postgres_url, mode):
    """SIGKILL a worker mid-stream; a new worker replays every write it acknowledged into PostgreSQL."""
    process = await asyncio.create_subprocess_exec(sys.executable, str(KILLED_WRITER), redis_url, redis_prefix, mode,
                                                   stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    acked: dict[str, int] = {}
    try:
        assert (await asyncio.wait_for(process.stdout.readline(), 20)).strip() == b"ready"
        while len(acked) < 50 or max(acked.values(), default=0) < 300:
            line = await asyncio.wait_for(process.stdout.readline(), 20)
            _, key, counter = line.decode().split()
            acked[key] = max(acked.get(key, 0), int(counter))
    finally:
        process.kill()
        rest = await process.stdout.read()
        await process.wait()
    for line in rest.decode().splitlines():  # acknowledgements printed before the kill landed
        _, key, counter = line.split()
        acked[key] = max(acked.get(key, 0), int(counter))

    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=4)
    try:
        await pool.execute("CREATE TABLE orders (tenant_id text, key text, value jsonb NOT NULL, version bigint NOT NULL,"
                           " PRIMARY KEY (tenant_id, key))")

        async def writer(write):
            await pool.execute(
                "INSERT INTO orders VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, key) DO UPDATE"
                " SET value = excluded.value, version = excluded.version WHERE orders.version < excluded.version",
                write.tenant_id, write.key, json.dumps(write.value), write.version)

        replayer = await make_cache(backend="two-layer", namespaces=BEHIND, write_behind_claim_idle=0.3)
        replayer.register_writer("orders", writer)
        assert await replayer.drain("orders", timeout=30) == 0
        rows = {row["key"]: json.loads(row["value"])["n"] for row in await pool.fetch("SELECT key, value FROM orders")}
    finally:
        await pool.close()
    assert set(rows) == set(acked)
    # Every acknowledged write is there; a write acknowledged just before the kill may be newer than the last line read.
    assert all(rows[key] >= counter for key, counter in acked.items())
    assert replayer.stats("orders")["write_behind"]["dead_lettered"] == 0
