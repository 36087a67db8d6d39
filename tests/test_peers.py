"""The real peers the suite depends on answer: a failure here explains every other failure."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis


async def test_postgres_database_is_fresh_and_usable(postgres_url):
    connection = await asyncpg.connect(postgres_url)
    try:
        tables = await connection.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        version = await connection.fetchval("SHOW server_version_num")
    finally:
        await connection.close()
    assert tables == 0
    assert int(version) >= 150000


async def test_redis_prefix_is_cleaned(redis_url, redis_prefix):
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set(f"{redis_prefix}probe", "1")
        assert await client.get(f"{redis_prefix}probe") == b"1"
    finally:
        await client.aclose()
