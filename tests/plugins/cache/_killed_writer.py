"""A worker the write-behind test kills with SIGKILL: it acknowledges writes and prints each acknowledgement.

Usage: python _killed_writer.py REDIS_URL PREFIX MODE, where MODE is ``unread`` (no writer here: its
writes are never read) or ``stuck`` (a writer that never returns: its writes are read and left
pending to this consumer). Not collected by pytest (the name does not start with ``test_``).
"""

from __future__ import annotations

import asyncio
import sys

from botcriptofy_cache import CacheService, CacheSettings


async def main(url: str, prefix: str, mode: str) -> None:
    cache = CacheService(CacheSettings(backend="two-layer", redis_url=url, prefix=prefix, redis_timeout=2.0,
                                       namespaces={"orders": {"write_policy": "write-behind"}}))
    await cache.start()
    if mode == "stuck":
        async def stuck(write: object) -> None:
            await asyncio.Event().wait()

        cache.register_writer("orders", stuck)
    print("ready", flush=True)
    counter = 0
    while True:
        counter += 1
        key = f"order-{counter % 50}"
        await cache.write(key, {"n": counter}, namespace="orders", tenant_id="t1")
        print(f"acked {key} {counter}", flush=True)
        await asyncio.sleep(0.001)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
