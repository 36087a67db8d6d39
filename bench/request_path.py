"""In-process cost of an authenticated, rate-limited ``GET /v1/me`` with every installed plugin, and its profile.

The runtime is started in this process (no server, no network) over a temporary settings
directory; the request is an ASGI call with a bearer access token or an API key. The baseline in the
same run is a bare Starlette JSON route called the same way, alternating rounds, best of each.

    .venv/bin/python bench/request_path.py                      # embedded backends (SQLite, memory)
    .venv/bin/python bench/request_path.py --redis              # Redis cache + limits, PostgreSQL storage
    .venv/bin/python bench/request_path.py --profile me.pstats  # also a cProfile of the JWT request
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import POSTGRES_ADMIN, installed_plugins, machine, scratch

PASSWORD = "correct horse battery staple"
REDIS = "redis://127.0.0.1:6379/0"


def bare_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def hello(request: Any) -> JSONResponse:
        return JSONResponse({"hello": "world"})

    return Starlette(routes=[Route("/json", hello)])


async def call(app: Any, path: str, headers: list[tuple[bytes, bytes]], count: int) -> tuple[float, int]:
    """Call ``app`` ``count`` times; return (seconds per request, last status)."""
    message = {"type": "http.request", "body": b"", "more_body": False}
    status = 0

    async def receive() -> dict[str, Any]:
        return message

    async def send(sent: dict[str, Any]) -> None:
        nonlocal status
        if sent["type"] == "http.response.start":
            status = sent["status"]

    base = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
    }
    started = time.perf_counter()
    for _ in range(count):
        await app(dict(base), receive, send)
    return (time.perf_counter() - started) / count, status


async def settings_dir_for(work: Path, redis: bool) -> tuple[Path, str]:
    """Write the settings of one configuration under ``work``; return the directory and the scratch database (or '')."""
    from botcriptofy.testing import render_settings

    sections: dict[str, Any] = {
        "kernel": {"state_dir": str(work / "state")},
        "ratelimit": {"enforce": False},  # observe mode, as every bench: limits computed and headers sent, nothing refused
    }
    database = ""
    if redis:
        import asyncpg  # the storage plugin's driver

        database = f"bcf_bench_rp_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(POSTGRES_ADMIN)
        await admin.execute(f'CREATE DATABASE "{database}"')
        await admin.close()
        prefix = f"bcf-bench-rp:{os.getpid()}:{uuid.uuid4().hex[:6]}:"
        sections["storage"] = {"url": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"}
        sections["cache"] = {"backend": "two-layer", "redis_url": REDIS, "prefix": prefix + "c:"}
        sections["ratelimit"].update({"backend": "redis", "redis_url": REDIS, "key_prefix": prefix + "rl:"})
    else:
        sections["storage"] = {"url": f"sqlite+aiosqlite:///{work / 'bench.db'}"}
    settings_dir = work / "settings"
    settings_dir.mkdir(parents=True, exist_ok=True)
    (settings_dir / "settings.toml").write_text(render_settings(sections))
    return settings_dir, database


async def drop_database(database: str) -> None:
    if database:
        import asyncpg

        admin = await asyncpg.connect(POSTGRES_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def start_runtime(work: Path, redis: bool) -> tuple[Any, str]:
    from botcriptofy import Runtime

    settings_dir, database = await settings_dir_for(work, redis)
    runtime = Runtime(settings_dir, env="development", discover=True, watch=False)
    await runtime.start()
    return runtime, database


async def credentials(runtime: Any) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    import httpx

    from botcriptofy_auth._accounts import mark_email_verified

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime), base_url="http://bench") as client:
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        response = await client.post(
            "/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "Bench", "account_type": "influencer"}
        )
        response.raise_for_status()
        token = response.json()["tokens"]["access_token"]
        await mark_email_verified(runtime.current, email=email, by="bench")
        from botcriptofy_billing._service import assign

        await assign(runtime.current, response.json()["tenant"]["id"], "internal")  # a plan with API keys
        created = await client.post(
            "/v1/auth/api-keys", headers={"Authorization": f"Bearer {token}"}, json={"name": "bench", "scopes": ["trading:read"]}
        )
        if created.status_code != 201:
            raise SystemExit(f"creating the API key failed: {created.status_code} {created.text}")
        key = created.json()["key"]
    return [(b"authorization", f"Bearer {token}".encode())], [(b"x-api-key", key.encode())]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bare = bare_app()
    with scratch("bcf-request-path-") as work:
        runtime, database = await start_runtime(work, args.redis)
        try:
            jwt_headers, key_headers = await credentials(runtime)
            for headers in (jwt_headers, key_headers):
                _, status = await call(runtime, "/v1/me", headers, 200)
                assert status == 200, status
            await call(bare, "/json", [], 2000)
            best: dict[str, float] = {"bare": 1e9, "jwt": 1e9, "api_key": 1e9}
            for _ in range(args.rounds):
                best["bare"] = min(best["bare"], (await call(bare, "/json", [], args.requests))[0])
                best["jwt"] = min(best["jwt"], (await call(runtime, "/v1/me", jwt_headers, args.requests))[0])
                best["api_key"] = min(best["api_key"], (await call(runtime, "/v1/me", key_headers, args.requests))[0])
            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                await call(runtime, "/v1/me", jwt_headers, args.requests * 2)
                profiler.disable()
                profiler.dump_stats(args.profile)
                pstats.Stats(args.profile).sort_stats("tottime").print_stats(35)
        finally:
            await runtime.stop()
            await drop_database(database)
    return {
        "bare_us": round(best["bare"] * 1e6, 2),
        "me_jwt_us": round(best["jwt"] * 1e6, 2),
        "me_api_key_us": round(best["api_key"] * 1e6, 2),
        "ratio_jwt": round(best["bare"] / best["jwt"], 3),
        "ratio_api_key": round(best["bare"] / best["api_key"], 3),
    }


async def redis_calls(iterations: int, rounds: int) -> dict[str, float]:
    """µs per request of the rate limiter's Redis work: two script calls in turn, the two pipelined, one call.

    The backend's own connection (which batches concurrent calls into one round trip) and the checks a
    request of a tenant on a plan with a monthly quota makes; one caller, and 32 callers at once.
    """
    from botcriptofy_ratelimit._backend import RedisBackend
    from botcriptofy_ratelimit._metrics import Metrics
    from botcriptofy_ratelimit._policy import Policy, Subject
    from botcriptofy_ratelimit._settings import RateLimitSettings

    prefix = f"bcf-bench-rp-calls:{os.getpid()}:"
    settings = RateLimitSettings(
        backend="redis", redis_url=REDIS, key_prefix=prefix, flood_guard={"rate_per_minute": 10**9, "burst": 10**9}
    )
    policy = Policy(settings)
    backend = RedisBackend(settings, Metrics())
    await backend.start()
    flood = policy.flood_check("127.0.0.1")
    assert flood is not None
    plan = policy.plan_named("free")
    big = type(plan)(plan.name, 10**9, 10**9, 10**12)
    subject = Subject("tenant bench", "bench", f"{prefix}s:t:bench", f"{prefix}q:bench", f"{prefix}p:t:bench")
    tenant = policy.subject_checks(subject, big, 1)
    params = policy.penalty

    async def two() -> None:
        await backend.hit([flood], params)
        await backend.hit(tenant, params)

    async def pipelined() -> None:
        await asyncio.gather(backend.hit([flood], params), backend.hit(tenant, params))

    async def one() -> None:
        await backend.hit([flood, *tenant], params)

    async def timed(call: Any, callers: int) -> float:
        async def caller() -> None:
            for _ in range(iterations // callers):
                await call()

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return (time.perf_counter() - started) / (iterations // callers * callers) * 1e6

    best: dict[str, float] = {}
    try:
        for call in (two, pipelined, one):
            await timed(call, 1)
        for _ in range(rounds):
            for name, call in (("two_calls", two), ("pipelined", pipelined), ("one_call", one)):
                for callers in (1, 32):
                    key = f"{name}_{callers}_callers_us"
                    best[key] = min(best.get(key, 1e9), await timed(call, callers))
    finally:
        await backend.close()
        import redis

        client = redis.Redis.from_url(REDIS)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
    return {key: round(value, 1) for key, value in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", action="store_true", help="Redis cache and limits, PostgreSQL storage.")
    parser.add_argument("--profile", help="Write a cProfile of the JWT request to this file and print its top.")
    parser.add_argument("--redis-calls", action="store_true", help="Only the rate limiter's Redis work: two calls, pipelined, one.")
    args = parser.parse_args()
    print(f"{machine()}; plugins: {', '.join(installed_plugins())}; load average {os.getloadavg()[0]:.2f}")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.redis_calls:
        print(asyncio.run(redis_calls(2000, args.rounds)), f"load average after: {os.getloadavg()[0]:.2f}")
        return
    result = asyncio.run(run(args))
    print(result, f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
