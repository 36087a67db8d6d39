"""Login capacity: logins per second and p95 latency at rising concurrency, with the hashing queue bounded and unbounded.

Run by hand (never by the tests)::

    .venv/bin/python bench/login_capacity.py                      # ~1 minute
    .venv/bin/python bench/login_capacity.py --levels 1,8,32 --duration 3

One process, the storage (SQLite) and auth plugins, production argon2id parameters (time 3, 64 MiB,
parallelism 4) and ``hash_concurrency`` 2. Clients are in-process (``httpx`` over ASGI), so the
figures are the service's own capacity without the network. Each level runs ``--duration`` seconds
of back-to-back ``POST /v1/auth/login`` from that many concurrent clients. Ratios are to the
single-client figures measured in the same run. With the queue bounded (``hash_queue_limit``, 16
by default) the p95 of accepted logins stays near ``(limit + concurrency) / concurrency`` hashes and
the excess is answered 503 at once; unbounded, every login waits its turn and p95 grows with load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py, shared by the bench scripts

from _common import machine

import botcriptofy_auth
import botcriptofy_storage
from botcriptofy import Runtime
from botcriptofy.testing import render_settings

PASSWORD = "correct horse battery staple"
EMAIL = "capacity@example.com"


async def level(client: httpx.AsyncClient, concurrency: int, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + duration

    async def one_client() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await client.post("/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            elif response.status_code == 503:
                await asyncio.sleep(0.05)  # a client that honours the 503 backs off a little, as real ones do

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ok = statuses.get(200, 0)
    p95 = statistics.quantiles(latencies, n=20)[18] if len(latencies) >= 20 else (max(latencies) if latencies else float("nan"))
    return {"concurrency": concurrency, "logins_per_s": ok / elapsed, "p95_s": p95, "statuses": statuses}


async def run(levels: list[int], duration: float, queue_limit: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bcf-login-bench-") as scratch:
        root = Path(scratch)
        (root / "settings").mkdir()
        settings = {
            "storage": {"url": f"sqlite+aiosqlite:///{root / 'bench.db'}"},
            "auth": {"hash_concurrency": 2, "hash_queue_limit": queue_limit, "login_ip_limit": 1_000_000, "lockout_threshold": 1_000_000},
        }
        (root / "settings" / "settings.toml").write_text(render_settings(settings, state_dir=root / "state"))
        runtime = Runtime(
            root / "settings",
            env="development",
            plugins={"storage": botcriptofy_storage, "auth": botcriptofy_auth},
            discover=False,
            watch=False,
        )
        await runtime.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime), base_url="http://bench", timeout=120) as client:
                created = await client.post(
                    "/v1/auth/signup", json={"email": EMAIL, "password": PASSWORD, "name": "Bench", "account_type": "trader"}
                )
                assert created.status_code == 201, created.text
                return [await level(client, n, duration) for n in levels]
        finally:
            await runtime.stop()


def report(title: str, rows: list[dict[str, Any]]) -> None:
    base = rows[0]
    print(f"\n{title}")
    print(f"{'clients':>7} {'logins/s':>9} {'x base':>7} {'p95 ms':>8} {'x base':>7}  statuses")
    for row in rows:
        print(
            f"{row['concurrency']:>7} {row['logins_per_s']:>9.1f} {row['logins_per_s'] / base['logins_per_s']:>7.2f} "
            f"{row['p95_s'] * 1000:>8.0f} {row['p95_s'] / base['p95_s']:>7.2f}  {dict(sorted(row['statuses'].items()))}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,4,16,32,64", help="Comma-separated concurrency levels (the first is the baseline).")
    parser.add_argument("--duration", type=float, default=4.0, help="Seconds per level.")
    parser.add_argument("--queue-limit", type=int, default=16, help="auth.hash_queue_limit of the bounded run.")
    parser.add_argument("--skip-unbounded", action="store_true", help="Only the bounded run.")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    print(f"login capacity, {machine()}")
    report(f"bounded queue (hash_queue_limit={args.queue_limit})", asyncio.run(run(levels, args.duration, args.queue_limit)))
    if not args.skip_unbounded:
        report("unbounded queue (hash_queue_limit=10000: every login waits its turn)", asyncio.run(run(levels, args.duration, 10_000)))


if __name__ == "__main__":
    main()
