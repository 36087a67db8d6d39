"""Auth plugin benchmark: password hashing, token verification, and authenticated GET /v1/me versus bare Starlette.

Run by hand (never by the tests)::

    .venv/bin/python bench/auth_bench.py                 # everything, ~2 minutes on 2 cores
    .venv/bin/python bench/auth_bench.py --skip-http     # only the in-process measurements
    .venv/bin/python bench/auth_bench.py --json out.json

Every HTTP figure is a ratio to a bare Starlette JSON route measured in the same run on the same
machine (one uvicorn worker each, ``wrk -t2 -c50``), because ``wrk`` shares the cores with the
server. With ``--pin`` (the default when ``taskset`` exists) the server runs on CPU 0 and ``wrk``
on CPU 1, so the two do not fight over one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import tomlkit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_common.py, shared by the bench scripts

PASSWORD = "correct horse battery staple"

BARE_APP = textwrap.dedent(
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route


    async def hello(request):
        return JSONResponse({"hello": "world"})


    app = Starlette(routes=[Route("/json", hello)])
    """
)


# -- in-process measurements ----------------------------------------------------------------


def _median_ms(func: Any, runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def bench_passwords() -> dict[str, Any]:
    from botcriptofy_auth._passwords import Passwords
    from botcriptofy_auth._settings import AuthSettings

    defaults = AuthSettings()
    passwords = Passwords(
        time_cost=defaults.argon2_time_cost,
        memory_cost=defaults.argon2_memory_cost,
        parallelism=defaults.argon2_parallelism,
        concurrency=defaults.hash_concurrency,
    )
    hasher = passwords._hasher
    stored = hasher.hash(PASSWORD)
    hash_ms = _median_ms(lambda: hasher.hash(PASSWORD), 10)
    verify_ms = _median_ms(lambda: hasher.verify(stored, PASSWORD), 10)

    # 16 logins at once through the plugin's pool: throughput, and how long the event loop ever waited.
    lag = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal lag
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.001)
            lag = max(lag, loop.time() - before - 0.001)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    await asyncio.gather(*(passwords.verify(stored, PASSWORD) for _ in range(16)))
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    passwords.close()
    return {
        "params": f"argon2id t={defaults.argon2_time_cost} m={defaults.argon2_memory_cost} KiB p={defaults.argon2_parallelism}",
        "hash_ms": round(hash_ms, 1),
        "verify_ms": round(verify_ms, 1),
        "concurrency_cap": defaults.hash_concurrency,
        "verifies_per_s_16_at_once": round(16 / elapsed, 1),
        "max_event_loop_lag_ms": round(lag * 1000, 2),
    }


def bench_tokens() -> dict[str, Any]:
    from botcriptofy_auth._keys import KeyRing, generate_private_key

    now = int(time.time())
    claims = {
        "iss": "botcriptofy",
        "aud": "botcriptofy-api",
        "sub": "u",
        "tid": "t",
        "sid": "s",
        "knd": "user",
        "amr": ["pwd"],
        "typ": "access",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": "x",
    }
    out: dict[str, Any] = {}
    runs = 3000
    secret = os.urandom(32)
    hs_token = jwt.encode(claims, secret, algorithm="HS256")
    started = time.perf_counter()
    for _ in range(runs):
        jwt.decode(hs_token, secret, algorithms=["HS256"], audience="botcriptofy-api", issuer="botcriptofy")
    baseline = (time.perf_counter() - started) / runs * 1e6
    out["baseline_hs256_decode_us"] = round(baseline, 1)
    for algorithm in ("EdDSA", "ES256"):
        ring = KeyRing(generate_private_key(algorithm), verified_cache=0)
        token = ring.sign(claims)
        started = time.perf_counter()
        for _ in range(runs):
            ring._verified.clear()
            ring.verify(token, audience="botcriptofy-api", issuer="botcriptofy", now=time.time())
        cold = (time.perf_counter() - started) / runs * 1e6
        out[f"{algorithm}_verify_us"] = round(cold, 1)
        out[f"{algorithm}_verify_vs_hs256"] = round(cold / baseline, 2)
    ring = KeyRing(generate_private_key("EdDSA"))
    token = ring.sign(claims)
    ring.verify(token, audience="botcriptofy-api", issuer="botcriptofy", now=time.time())
    started = time.perf_counter()
    for _ in range(runs * 10):
        ring.verify(token, audience="botcriptofy-api", issuer="botcriptofy", now=time.time())
    out["remembered_verify_us"] = round((time.perf_counter() - started) / (runs * 10) * 1e6, 2)
    return out


# -- HTTP -----------------------------------------------------------------------------------


def _settings(directory: Path, sections: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "settings.toml").write_text(tomlkit.dumps({"default": sections}), encoding="utf-8")


def _pinned(command: list[str], cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu, *command] if cpu is not None else command


def _wrk(url: str, work: Path, *, headers: dict[str, str], duration: int, connections: int, pin: bool) -> dict[str, Any]:
    from _common import lua_script, parse_wrk, wrk_command

    lines = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in headers.items())
    script = lua_script(work, lines)
    warm = wrk_command(url, script, connections=connections, duration="2s")
    subprocess.run(_pinned(warm, "1" if pin else None), check=True, capture_output=True)
    command = _pinned(wrk_command(url, script, connections=connections, duration=f"{duration}s"), "1" if pin else None)
    result = parse_wrk(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return {
        "requests_per_s": round(result.rps),
        "p50_ms": round(result.p50_ms, 2),
        "p95_ms": round(result.p95_ms, 2),
        "p99_ms": round(result.p99_ms, 2),
        "failures": result.failures,
    }


def _bare(work: Path, *, duration: int, connections: int, pin: bool) -> dict[str, Any]:
    from _common import Server, free_port

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bare_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    server = Server("bare", _pinned(command, "0" if pin else None), port=port, health="/json", cwd=work, log_dir=work)
    try:
        server.wait_ready()
        return _wrk(f"{server.base}/json", work, headers={}, duration=duration, connections=connections, pin=pin)
    finally:
        server.stop()


def _kernel(
    name: str, work: Path, sections: dict[str, Any], *, duration: int, connections: int, pin: bool, api_key: bool = False
) -> dict[str, Any]:
    from _common import BOTCRIPTOFY, Server, free_port

    settings_dir = work / name
    _settings(settings_dir, sections)
    port = free_port()
    command = [BOTCRIPTOFY, "--settings", str(settings_dir), "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = Server(
        name,
        _pinned(command, "0" if pin else None),
        port=port,
        health="/-/health",
        cwd=work,
        env={"BOTCRIPTOFY_ENV": "development"},
        log_dir=work,
    )
    try:
        server.wait_ready()
        base = server.base
        plugins = [p["name"] for p in httpx.get(f"{base}/-/plugins").json()["plugins"] if p["enabled"]]
        response = httpx.post(
            f"{base}/v1/auth/signup",
            json={"email": f"bench-{port}@example.com", "password": PASSWORD, "name": "Bench", "account_type": "influencer"},
            timeout=30,
        )
        response.raise_for_status()
        headers = {"Authorization": f"Bearer {response.json()['tokens']['access_token']}"}
        if api_key:
            # An API key needs a verified address (and, with billing, a plan that has API keys): set both as an
            # operator would, then log in again so the server reads the account as it is now.
            email = f"bench-{port}@example.com"
            operator = [BOTCRIPTOFY, "--settings", str(settings_dir)]
            env = {**os.environ, "BOTCRIPTOFY_ENV": "development"}
            subprocess.run([*operator, "users", "verify-email", "--email", email], check=True, capture_output=True, env=env)
            tenant = response.json()["tenant"]["id"]
            if "billing" in plugins:
                subprocess.run([*operator, "billing", "assign", tenant, "internal"], check=True, capture_output=True, env=env)
            else:
                # Without billing the plan is the tenant row's (a sign-up gets Free, which has no API keys): set it in
                # the bench's own scratch database, as a plan change would.
                database = sections["storage"]["url"].split("///", 1)[1]
                with sqlite3.connect(database) as connection:
                    updated = connection.execute("UPDATE auth_tenants SET plan = 'pro' WHERE id = ?", (tenant,)).rowcount
                assert updated == 1, f"tenant {tenant} not found in {database}"
            login = httpx.post(f"{base}/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
            login.raise_for_status()
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            created = httpx.post(f"{base}/v1/auth/api-keys", headers=headers, json={"name": "bench", "scopes": ["trading:read"]})
            created.raise_for_status()
            headers = {"X-API-Key": created.json()["key"]}
        assert httpx.get(f"{base}/v1/me", headers=headers).status_code == 200
        result = _wrk(f"{base}/v1/me", work, headers=headers, duration=duration, connections=connections, pin=pin)
    finally:
        server.stop()
    result["plugins"] = plugins
    return result


def bench_http(duration: int, connections: int, pin: bool, redis_url: str | None, only: list[str]) -> dict[str, Any]:
    """Each configuration runs between two runs of the bare Starlette baseline; its ratio uses their mean, so load
    that drifts during the run (other work on the machine) affects both sides of each ratio alike."""
    from _common import installed_plugins, need, scratch

    need("wrk")
    results: dict[str, Any] = {}
    baselines: list[int] = []
    with scratch("bcf-auth-bench-") as work:
        (work / "bare_app.py").write_text(BARE_APP)

        def bare() -> int:
            run = _bare(work, duration=duration, connections=connections, pin=pin)
            baselines.append(run["requests_per_s"])
            return int(run["requests_per_s"])

        installed = set(installed_plugins())

        def sections(index: int, enabled: set[str], **extra: Any) -> dict[str, Any]:
            value: dict[str, Any] = {
                "kernel": {"state_dir": str(work / f"state-{index}")},
                "plugins": {"disabled": sorted(installed - enabled)},
                "storage": {"url": f"sqlite+aiosqlite:///{work / f'bench-{index}.db'}"},
            }
            if "ratelimit" in enabled:  # observe mode, as every bench runs it: limits computed and headers sent, nothing refused
                value["ratelimit"] = {"enforce": False}
            for key, more in extra.items():
                value[key] = {**value.get(key, {}), **more}
            return value

        every = set(installed)
        prefix = f"bcf-bench:{os.getpid()}:"
        configurations: list[tuple[str, dict[str, Any], bool]] = [
            ("me_storage_auth", sections(1, {"storage", "auth"}), False),
            ("me_storage_auth_api_key", sections(2, {"storage", "auth"}), True),
            ("me_all_plugins_embedded", sections(3, every), False),
        ]
        if redis_url:
            two_layer = {"backend": "two-layer", "redis_url": redis_url, "prefix": prefix + "c5:"}
            configurations.append(("me_storage_auth_cache_redis", sections(5, {"storage", "auth", "cache"}, cache=two_layer), False))
            configurations.append(
                (
                    "me_all_plugins_redis",
                    sections(
                        4,
                        every,
                        cache={"backend": "two-layer", "redis_url": redis_url, "prefix": prefix + "c:"},
                        ratelimit={"backend": "redis", "redis_url": redis_url, "key_prefix": prefix + "rl:"},
                    ),
                    False,
                )
            )
        configurations = [c for c in configurations if not only or any(word in c[0] for word in only)]
        before = bare()
        for index, (name, config, api_key) in enumerate(configurations):
            run = _kernel(f"s{index}", work, config, duration=duration, connections=connections, pin=pin, api_key=api_key)
            after = bare()
            run["baseline_requests_per_s"] = round((before + after) / 2)
            run["ratio_to_bare"] = round(run["requests_per_s"] / run["baseline_requests_per_s"], 3)
            results[name] = run
            before = after
        if redis_url:
            _clean_redis(redis_url, prefix)
    results["bare_starlette"] = {"requests_per_s": round(statistics.mean(baselines)), "runs": baselines}
    return results


def _clean_redis(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="Seconds of each wrk run (default 10).")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("-k", dest="only", action="append", default=[], help="Run only HTTP configurations whose name contains this.")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis for the cache/ratelimit run; '' skips it.")
    parser.add_argument(
        "--pin", dest="pin", action="store_true", default=shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    args = parser.parse_args()

    from _common import machine

    report: dict[str, Any] = {"machine": machine(), "load_average": os.getloadavg(), "pinned": args.pin}
    report["passwords"] = asyncio.run(bench_passwords())
    report["tokens"] = bench_tokens()
    if not args.skip_http:
        report["http"] = bench_http(args.duration, args.connections, args.pin, args.redis or None, args.only)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
