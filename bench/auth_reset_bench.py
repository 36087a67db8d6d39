"""Password reset requests: does the answer's timing tell a known address from an unknown one?

Run by hand (never by the tests)::

    .venv/bin/python bench/auth_reset_bench.py                 # SQLite and PostgreSQL, ~1 minute on 2 cores
    .venv/bin/python bench/auth_reset_bench.py --sqlite-only --requests 300

``POST /v1/auth/password/forgot`` is sent alternately for an address that has an account and for one
that has none (in process, through the ASGI app, with the storage, auth and notifications plugins;
every request for the known address creates a token and queues its e-mail, since
``account_mail_interval`` is 0). It prints the median and 95th percentile of each and their ratio, and,
as a baseline measured in the same run, ``GET /.well-known/jwks.json``. A ratio near 1.0 means the
timing does not reveal whether an account exists.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import botcriptofy_auth
import botcriptofy_notifications
import botcriptofy_storage
from botcriptofy import Runtime
from botcriptofy.testing import render_settings
from botcriptofy_auth._state import state_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, on_both_databases

PASSWORD = "correct horse battery staple"


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 3),
    }


async def _timed(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> float:
    started = time.perf_counter()
    response = await client.request(method, url, **kwargs)
    elapsed = time.perf_counter() - started
    assert response.status_code in (200, 202), response.text
    return elapsed


async def bench_database(name: str, url: str, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bcf-reset-bench-") as scratch:
        work = Path(scratch)
        (work / "settings").mkdir()
        (work / "settings" / "settings.toml").write_text(
            render_settings(
                {
                    "storage": {"url": url, "relay_poll_interval": 0.05},
                    "auth": {
                        "argon2_time_cost": 1,
                        "argon2_memory_cost": 1024,
                        "argon2_parallelism": 1,
                        "account_mail_interval": 0,
                        "account_mail_daily_cap": 1_000_000,
                    },
                    "notifications": {"poll_interval": 0.2},
                },
                state_dir=work / "state",
            )
        )
        plugins = {"storage": botcriptofy_storage, "auth": botcriptofy_auth, "notifications": botcriptofy_notifications}
        runtime = Runtime(work / "settings", env="testing", plugins=plugins, discover=False, watch=False)
        await runtime.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime), base_url="http://bench") as client:
                made = await client.post(
                    "/v1/auth/signup", json={"email": "known@example.com", "password": PASSWORD, "name": "Known", "account_type": "trader"}
                )
                assert made.status_code == 201, made.text
                for _ in range(20):  # warm-up
                    await _timed(client, "POST", "/v1/auth/password/forgot", json={"email": "known@example.com"})
                    await _timed(client, "POST", "/v1/auth/password/forgot", json={"email": "nobody@example.com"})
                known: list[float] = []
                unknown: list[float] = []
                baseline: list[float] = []
                for _ in range(requests):
                    known.append(await _timed(client, "POST", "/v1/auth/password/forgot", json={"email": "known@example.com"}))
                    unknown.append(await _timed(client, "POST", "/v1/auth/password/forgot", json={"email": "nobody@example.com"}))
                    baseline.append(await _timed(client, "GET", "/.well-known/jwks.json"))
                # Let the background work finish before the runtime stops.
                await asyncio.gather(*list(state_of(runtime.current).background), return_exceptions=True)
        finally:
            await runtime.stop()
    k, u, b = _stats(known), _stats(unknown), _stats(baseline)
    return {
        "database": name,
        "requests": requests,
        "known": k,
        "unknown": u,
        "baseline_jwks": b,
        "known_vs_unknown_median": round(k["median_ms"] / u["median_ms"], 3),
        "known_vs_unknown_p95": round(k["p95_ms"] / u["p95_ms"], 3),
        "forgot_vs_baseline_median": round(u["median_ms"] / b["median_ms"], 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    print(f"machine: {machine()}")
    results = await on_both_databases(bench_database, options.requests, sqlite_only=options.sqlite_only, prefix="bcf-reset-")
    for result in results:
        print(json.dumps(result))
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
