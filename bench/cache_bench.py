"""Cache plugin benchmark: in-process hit latency, Redis-layer hit against raw redis-py, entry codec cost, Zipf hit ratio.

Run by hand (never by the tests): ``.venv/bin/python bench/cache_bench.py [--quick]``. Needs the
Redis at ``BCF_BENCH_REDIS`` (default ``redis://127.0.0.1:6379/0``); every key it writes is under
a ``bcf-bench:<random>:`` prefix and is deleted at the end. Each figure is compared with a baseline
measured in the same run, on the same machine: a bare ``await`` of a dict lookup and the kernel's
fallback cache for the in-process hit, a raw redis-py ``GET`` of the same bytes for the Redis hit.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import datetime
import itertools
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from botcriptofy._cache import LocalCache  # the kernel's fallback, as a baseline only
from botcriptofy_cache import CacheService, CacheSettings

REDIS_URL = os.environ.get("BCF_BENCH_REDIS", "redis://127.0.0.1:6379/0")
VALUE = {"id": "7b0c5d1e", "email": "alice@example.com", "plan": "pro", "roles": ["trader"], "limits": {"bots": 10}}


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout.split()[2]
    except (OSError, IndexError):
        server = "?"
    return (
        f"{datetime.date.today().isoformat()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Redis {server.removeprefix('v=')}"
    )


async def per_op(operation: Callable[[], Awaitable[Any]], count: int, repeats: int) -> float:
    """Median over ``repeats`` runs of the microseconds per call of ``operation``."""
    for _ in range(min(count, 2000)):
        await operation()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(count):
            await operation()
        runs.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(runs)


async def in_process_hit(count: int, repeats: int) -> None:
    print("\n## In-process hit (µs per op; target < 5 µs)")
    table: dict[str, Any] = {"hot": VALUE}

    async def bare() -> Any:
        return table.get("hot")

    fallback = LocalCache()
    await fallback.set("hot", VALUE)
    memory = CacheService(CacheSettings(backend="memory"))
    two_layer = CacheService(CacheSettings(backend="two-layer", redis_url=REDIS_URL, prefix=f"bcf-bench:{uuid.uuid4().hex[:8]}:"))
    for cache in (memory, two_layer):
        await cache.start()
        await cache.set("hot", VALUE, ttl=3600, tags=["users"], tenant_id="t1")

    def loader() -> Any:
        raise AssertionError("a hit never loads")

    cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("baseline: await of a dict lookup", bare),
        ("baseline: kernel fallback LocalCache.get", lambda: fallback.get("hot")),
        ("plugin memory get", lambda: memory.get("hot", tenant_id="t1")),
        ("plugin memory get_or_set", lambda: memory.get_or_set("hot", loader, tenant_id="t1")),
        ("plugin two-layer get (in-process copy)", lambda: two_layer.get("hot", tenant_id="t1")),
    ]
    results = {name: await per_op(op, count, repeats) for name, op in cases}
    base = results["baseline: await of a dict lookup"]
    for name, micros in results.items():
        print(f"{name:44s} {micros:7.3f} µs   x{micros / base:5.1f} of the bare await")
    verdict = "PASS" if results["plugin memory get"] < 5 and results["plugin two-layer get (in-process copy)"] < 5 else "FAIL"
    print(f"target < 5 µs: {verdict}")
    for cache in (memory, two_layer):
        await cache.close()


async def redis_hit(count: int, repeats: int) -> None:
    print("\n## Redis-layer hit against a raw redis-py GET (same machine, same Redis, same run)")
    prefix = f"bcf-bench:{uuid.uuid4().hex[:8]}:"
    cache = CacheService(CacheSettings(backend="redis", redis_url=REDIS_URL, prefix=prefix))
    await cache.start()
    await cache.set("hot", VALUE, ttl=3600, tenant_id="t1")
    client = aioredis.Redis.from_url(REDIS_URL)
    raw_key = f"{prefix}v:default:t1:hot"
    payload = await client.get(raw_key)
    await client.set(f"{prefix}raw", payload)
    raw_ms, plugin_ms = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine state
        raw_ms.append(await per_op(lambda: client.get(f"{prefix}raw"), count, 1))
        plugin_ms.append(await per_op(lambda: cache.get("hot", tenant_id="t1"), count, 1))
    raw, plugin = statistics.median(raw_ms), statistics.median(plugin_ms)
    print(f"{'raw redis-py GET (' + str(len(payload)) + ' bytes)':44s} {raw:7.1f} µs")
    print(f"{'plugin redis get (GET + decode + stats)':44s} {plugin:7.1f} µs   ratio x{plugin / raw:4.2f}")
    await client.delete(raw_key, f"{prefix}raw")
    await client.aclose()
    await cache.close()


def codec_cost(count: int, repeats: int) -> None:
    """What a Redis entry costs to encode and decode with each trust setting, against the unsigned pickle of 0.1."""
    import pickle

    from botcriptofy_cache._codec import Codec

    print("\n## Entry encode + decode (µs per round; baseline: the unsigned pickle that 0.1 wrote by default)")
    key = "k" * 48

    def pickle_round() -> None:
        pickle.loads(pickle.dumps(VALUE, protocol=pickle.HIGHEST_PROTOCOL))

    def once(call: Callable[[], Any]) -> float:
        started = time.perf_counter()
        for _ in range(count):
            call()
        return (time.perf_counter() - started) / count * 1e6

    rounds: dict[str, Callable[[], Any]] = {"unsigned pickle (0.1 default, unsafe)": pickle_round}
    for label, codec in (
        ("json (0.2 default)", Codec("json")),
        ("json signed (HMAC-SHA256)", Codec("json", key)),
        ("pickle signed (HMAC-SHA256)", Codec("pickle", key)),
    ):
        rounds[label] = lambda codec=codec: codec.decode(codec.encode(VALUE, 0.0, ("@tenant:t1",), 7))
    samples: dict[str, list[float]] = {label: [] for label in rounds}
    for _ in range(repeats):  # interleaved, so every variant sees the same machine state
        for label, call in rounds.items():
            samples[label].append(once(call))
    baseline = statistics.median(samples["unsigned pickle (0.1 default, unsafe)"])
    for label, values in samples.items():
        cost = statistics.median(values)
        print(f"{label:44s} {cost:7.2f} µs   x {cost / baseline:4.2f}")


def zipf(keys: int, exponent: float, rng: random.Random) -> Callable[[], int]:
    cumulative = list(itertools.accumulate(1.0 / rank**exponent for rank in range(1, keys + 1)))
    total = cumulative[-1]
    return lambda: bisect.bisect_left(cumulative, rng.random() * total)


async def zipf_hit_ratio(operations: int, remote_operations: int) -> None:
    print("\n## Hit ratio, Zipf read-mostly workload (99 % get_or_set, 1 % writes that invalidate; target >= 95 %)")
    print("   ratio = hits / (hits + misses) from the plugin's own counters; 'steady' is measured after a warm-up")
    print("   phase of as many operations, 'with cold' counts both phases (every first touch of a key is a miss);")
    print("   'ceiling' is what an unbounded cache would hit on the same steady phase (first touches and")
    print("   re-reads after an invalidation are misses for any cache)")
    rows = [
        ("memory", 10_000, 1.0, 10_000),
        ("memory", 10_000, 1.2, 10_000),
        ("memory", 100_000, 1.0, 10_000),
        ("memory", 100_000, 1.2, 10_000),
        ("two-layer", 100_000, 1.0, 10_000),
        ("two-layer", 100_000, 1.2, 10_000),
    ]
    for backend, keys, exponent, size in rows:
        rng = random.Random(20251125)
        sample = zipf(keys, exponent, rng)
        prefix = f"bcf-bench:{uuid.uuid4().hex[:8]}:"
        cache = CacheService(CacheSettings(backend=backend, redis_url=REDIS_URL, prefix=prefix, memory_max_entries=size, default_ttl=3600))
        await cache.start()
        count = operations if backend == "memory" else remote_operations

        present: set[str] = set()  # what an unbounded cache would hold: the ceiling any cache could reach
        ceiling = [0, 0]

        async def phase(
            cache: CacheService = cache,
            count: int = count,
            sample: Callable[[], int] = sample,
            rng: random.Random = rng,
            present: set[str] = present,
            ceiling: list[int] = ceiling,
        ) -> float:
            ceiling[:] = [0, 0]
            started = time.perf_counter()
            for _ in range(count):
                key = str(sample())
                if rng.random() < 0.01:
                    await cache.delete(key)  # a write to the system of record (write-around) invalidates the entry
                    present.discard(key)
                else:
                    await cache.get_or_set(key, lambda: VALUE)
                    ceiling[key in present] += 1
                    present.add(key)
            return time.perf_counter() - started

        await phase()
        warm = dict(cache.stats("default"))
        elapsed = await phase()
        stats = cache.stats("default")
        local, remote, misses = (stats[k] - warm[k] for k in ("hits_local", "hits_redis", "misses"))
        lookups = local + remote + misses
        steady = (local + remote) / lookups
        verdict = "PASS" if steady >= 0.95 else "below"
        print(
            f"{backend:9s} keys={keys:>7,} zipf s={exponent:.1f} LRU={size:>6,} ops=2x{count:>7,}  "
            f"steady {steady * 100:5.1f} % (in-process {local / lookups * 100:5.1f} %, redis {remote / lookups * 100:4.1f} %)  "
            f"ceiling {ceiling[1] / sum(ceiling) * 100:5.1f} %  with cold {(stats['hit_ratio'] or 0.0) * 100:5.1f} %  "
            f"evictions={stats['evictions']:>7,}  "
            f"{count / elapsed:>8,.0f} ops/s  {verdict}"
        )
        if backend != "memory":
            client = aioredis.Redis.from_url(REDIS_URL)
            keys_left = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
            for start in range(0, len(keys_left), 1000):
                await client.delete(*keys_left[start : start + 1000])
            await client.aclose()
        await cache.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer operations (a smoke run)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    print(f"# botcriptofy-cache benchmark — {machine()}")
    print(f"argv: {' '.join(sys.argv[1:]) or '(full run)'}")
    await in_process_hit(200_000 // scale, 5)
    await redis_hit(20_000 // scale, 5)
    codec_cost(50_000 // scale, 5)
    await zipf_hit_ratio(500_000 // scale, 150_000 // scale)


if __name__ == "__main__":
    asyncio.run(main())
