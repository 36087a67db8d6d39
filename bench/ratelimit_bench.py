"""Benchmarks of the ratelimit plugin; every figure is a ratio against a baseline measured in the same run.

1. One rate-limit check (plan rate + monthly quota, one EVALSHA of the plugin's script, through the
   plugin's backend) against a raw EVALSHA round trip of a script that returns 1, on the same Redis.
   The in-memory check is timed too.
2. Throughput of a kernel route (``GET /-/health``) served by one uvicorn worker, measured with ``wrk``,
   with rate limiting off (plugin not loaded), on with the in-memory backend, and on with Redis.
   The limits are set high enough that nothing is refused: this measures the cost of checking.

Run: ``.venv/bin/python bench/ratelimit_bench.py`` (needs Redis at 127.0.0.1:6379 and ``wrk`` on PATH;
``--seconds`` and ``--connections`` tune the wrk runs). As an app factory for uvicorn it serves the
benchmarked kernel: ``uvicorn --app-dir bench --factory ratelimit_bench:make_app`` (mode in
``RATELIMIT_BENCH_MODE``: off, memory or redis).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REDIS_URL = os.environ.get("BCF_BENCH_REDIS", "redis://127.0.0.1:6379/0")
PREFIX = "bcf-bench:ratelimit:"
HUGE = 100_000_000


def ratelimit_section(backend: str) -> dict[str, Any]:
    return {
        "backend": backend,
        "redis_url": REDIS_URL,
        "key_prefix": PREFIX,
        "flood_guard": {"rate_per_minute": HUGE, "burst": HUGE},
        "anonymous": {"rate_per_minute": HUGE, "burst": HUGE},
        "exempt_paths": [],  # /-/health is a probe, exempt by default: limit it here, it is the path wrk measures
    }


# -- the served app --------------------------------------------------------------------------


def make_app() -> Any:
    """The kernel the throughput benchmark serves (uvicorn app factory)."""
    from botcriptofy import Runtime
    from botcriptofy.testing import render_settings

    mode = os.environ.get("RATELIMIT_BENCH_MODE", "off")
    directory = Path(tempfile.mkdtemp(prefix="bcf-bench-"))
    settings = {} if mode == "off" else {"ratelimit": ratelimit_section(mode)}
    (directory / "settings.toml").write_text(render_settings(settings, state_dir=directory / "state"))
    plugins: dict[str, Any] = {}
    if mode != "off":
        import botcriptofy_ratelimit

        plugins["ratelimit"] = botcriptofy_ratelimit
    return Runtime(directory, env="production", plugins=plugins, discover=False, watch=False)


# -- 1. one check against one round trip -----------------------------------------------------


async def micro(iterations: int, rounds: int) -> dict[str, float]:
    import redis.asyncio as aioredis

    from botcriptofy_ratelimit._backend import MemoryBackend, RedisBackend
    from botcriptofy_ratelimit._core import GCRA, QUOTA, Check, PenaltyParams, interval_of
    from botcriptofy_ratelimit._metrics import Metrics
    from botcriptofy_ratelimit._settings import RateLimitSettings

    settings = RateLimitSettings(backend="redis", redis_url=REDIS_URL, key_prefix=PREFIX)
    backend = RedisBackend(settings, Metrics())
    await backend.start()
    memory = MemoryBackend()
    raw = aioredis.Redis.from_url(REDIS_URL)
    trivial = await raw.script_load("return 1")
    params = PenaltyParams(enabled=True, half_life=120_000_000, threshold=20, min_factor=0.1, max_score=1000, deny_weight=0.5)
    checks = [
        Check(GCRA, f"{PREFIX}s:t:bench", interval_of(HUGE, 60), HUGE, 1, f"{PREFIX}p:t:bench", "plan"),
        Check(QUOTA, f"{PREFIX}q:bench", 0, HUGE * 1000, 1, None, "quota"),
    ]

    async def time_it(call: Any) -> float:
        started = time.perf_counter()
        for _ in range(iterations):
            await call()
        return (time.perf_counter() - started) / iterations * 1e6

    async def round_trip() -> None:
        await raw.evalsha(trivial, 0)

    async def check() -> None:
        verdict = await backend.hit(checks, params)
        assert verdict.allowed and verdict.source == "redis"

    async def check_memory() -> None:
        await memory.hit(checks, params)

    async def concurrently(call: Any, callers: int = 32) -> float:
        """µs of wall time per call with ``callers`` tasks calling at once (throughput, as a server sees it)."""

        async def caller() -> None:
            for _ in range(iterations // callers):
                await call()

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return (time.perf_counter() - started) / (iterations // callers * callers) * 1e6

    results: dict[str, list[float]] = {"evalsha": [], "check": [], "memory": [], "evalsha_32": [], "check_32": []}
    try:
        for call in (round_trip, check, check_memory):  # warm-up
            for _ in range(200):
                await call()
        for _ in range(rounds):  # interleaved, so that drift hits both alike
            results["evalsha"].append(await time_it(round_trip))
            results["check"].append(await time_it(check))
            results["memory"].append(await time_it(check_memory))
            results["evalsha_32"].append(await concurrently(round_trip))
            results["check_32"].append(await concurrently(check))
    finally:
        await raw.delete(*[c.key for c in checks], f"{PREFIX}p:t:bench")
        await raw.aclose()
        await backend.close()
    return {name: statistics.median(values) for name, values in results.items()}


# -- 2. throughput with wrk -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(mode: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    environment = {**os.environ, "RATELIMIT_BENCH_MODE": mode}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(Path(__file__).parent),
            "--factory",
            "ratelimit_bench:make_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"the {mode} server did not start") from None
            time.sleep(0.05)
    return server, port


def wrk(port: int, seconds: int, connections: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/-/health"
    subprocess.run(["wrk", "-t1", "-c8", "-d1s", url], check=True, capture_output=True)  # warm-up
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url], check=True, capture_output=True, text=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": rps,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def throughput(seconds: int, connections: int, repeat: int) -> dict[str, list[dict[str, float]]]:
    """Cycle off, memory, redis ``repeat`` times (then off once more), so background load hits every mode alike."""
    results: dict[str, list[dict[str, float]]] = {"off": [], "memory": [], "redis": []}
    for mode in [*(("off", "memory", "redis") * repeat), "off"]:
        server, port = serve(mode)
        try:
            results[mode].append(wrk(port, seconds, connections))
        finally:
            server.terminate()
            server.wait(timeout=15)
    return results


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-wrk", action="store_true")
    options = parser.parse_args()

    print(f"# ratelimit benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}, load average {os.getloadavg()[0]:.1f}\n")
    figures = asyncio.run(micro(options.iterations, options.rounds))
    print("## One rate-limit check vs one raw EVALSHA round trip (median of interleaved rounds)\n")
    print("| what | µs per call, one caller | ratio | µs per call, 32 concurrent callers | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| raw EVALSHA round trip (`return 1`, redis-py) | {figures['evalsha']:.1f} | 1.00 | {figures['evalsha_32']:.1f} | 1.00 |")
    print(
        f"| rate-limit check, Redis (plan + quota + penalty, one EVALSHA) | {figures['check']:.1f} | "
        f"{figures['check'] / figures['evalsha']:.2f} | {figures['check_32']:.1f} | {figures['check_32'] / figures['evalsha_32']:.2f} |"
    )
    print(f"| rate-limit check, in-memory | {figures['memory']:.1f} | {figures['memory'] / figures['evalsha']:.2f} | | |")

    if options.skip_wrk:
        return
    if shutil.which("wrk") is None:
        print("\nwrk is not installed (apt-get install -y wrk): throughput skipped")
        return
    runs = throughput(options.seconds, options.connections, options.repeat)
    medians = {mode: {key: statistics.median(run[key] for run in values) for key in values[0]} for mode, values in runs.items()}
    baseline = medians["off"]["rps"]
    print(
        f"\n## GET /-/health, one uvicorn worker, wrk -t1 -c{options.connections} -d{options.seconds}s, "
        f"modes cycled {options.repeat}x (medians)\n"
    )
    print("| rate limiting | requests/s | ratio to off | p99 ms | non-2xx | runs (req/s) |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    names = {"off": "off (plugin not loaded)", "memory": "on, in-memory backend", "redis": "on, Redis backend"}
    for mode, figures_ in medians.items():
        each = ", ".join(f"{run['rps']:.0f}" for run in runs[mode])
        print(
            f"| {names[mode]} | {figures_['rps']:.0f} | {figures_['rps'] / baseline:.2f} | {figures_['p99_ms']:.2f} | "
            f"{figures_['non_2xx']:.0f} | {each} |"
        )
    print(f"\nload average during the run: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
