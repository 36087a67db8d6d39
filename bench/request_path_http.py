"""Authenticated, rate-limited, cached ``GET /v1/me`` over HTTP with every installed plugin, against bare Starlette.

Three measurements per configuration (``embedded``: SQLite, in-process cache and limits; ``redis``:
PostgreSQL storage, the two-layer Redis cache and Redis limits):

1. throughput, one uvicorn worker, ``wrk -t2 -c50`` (closed loop), JWT and API key, each between two
   runs of a bare Starlette JSON route (ratio to their mean), server on CPU 0 and wrk on CPU 1;
2. latency at a fixed arrival rate (``_openloop.py``, default 500 req/s), ``serve --workers 2``,
   JWT and API key: p50/p95/p99 from each request's due time, and failures;
3. ``--rss-minutes N`` (default 5, as the target is stated; 0 skips it): N minutes of mixed open-loop load
   (JWT, API key, anonymous and ``/-/health``) on ``--workers 2``, the RSS of every worker sampled every 30 s.

The rate limiter runs in observe mode (every limit computed and every header sent, nothing refused):
one client on one address would otherwise measure 429s. The load average is printed with every figure.

    .venv/bin/python bench/request_path_http.py                       # both configurations
    .venv/bin/python bench/request_path_http.py -k embedded --rss-minutes 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BOTCRIPTOFY, Server, free_port, lua_script, machine, need, parse_wrk, scratch, wrk_command
from _openloop import open_loop
from request_path import credentials, drop_database, settings_dir_for

BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request):
    return JSONResponse({"hello": "world"})


app = Starlette(routes=[Route("/json", hello)])
"""


def load() -> float:
    return round(os.getloadavg()[0], 2)


def pinned(command: list[str], cpu: str, pin: bool) -> list[str]:
    return ["taskset", "-c", cpu, *command] if pin else command


def wrk(url: str, work: Path, headers: dict[str, str], duration: int, pin: bool) -> dict[str, Any]:
    lines = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in headers.items())
    script = lua_script(work, lines)
    subprocess.run(pinned(wrk_command(url, script, duration="2s"), "1", pin), check=True, capture_output=True)
    before = load()
    output = subprocess.run(
        pinned(wrk_command(url, script, duration=f"{duration}s"), "1", pin), check=True, capture_output=True, text=True
    ).stdout
    result = parse_wrk(output)
    return {
        "requests_per_s": round(result.rps),
        "p50_ms": round(result.p50_ms, 2),
        "p95_ms": round(result.p95_ms, 2),
        "p99_ms": round(result.p99_ms, 2),
        "failures": result.failures,
        "load_average": [before, load()],
    }


def bare_server(work: Path, workers: int, pin: bool) -> Server:
    (work / "bare_app.py").write_text(BARE_APP)
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
        "--workers",
        str(workers),
    ]
    server = Server(f"bare-{workers}-{port}", pinned(command, "0", pin and workers == 1), port=port, health="/json", cwd=work, log_dir=work)
    server.wait_ready()
    return server


def kernel_server(settings_dir: Path, work: Path, workers: int, pin: bool) -> Server:
    port = free_port()
    command = [BOTCRIPTOFY, "--settings", str(settings_dir), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    server = Server(
        f"kernel-{workers}-{port}",
        pinned(command, "0", pin and workers == 1),
        port=port,
        health="/-/health",
        cwd=work,
        env={"BOTCRIPTOFY_ENV": "development"},
        log_dir=work,
    )
    server.wait_ready(timeout=120)
    return server


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in children:
                found.append(int(child))
                todo.append(int(child))
    return found


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _is_worker(pid: int) -> bool:
    """A gunicorn worker of the kernel (forked from the master: the same Python command line), not a helper it
    started (the workflows plugin's local Temporal dev server is a descendant too, and a large one)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"botcriptofy._serve" in command


def workers_of(server: Server) -> list[int]:
    """The serving processes: the server's descendants that are kernel workers, largest RSS first."""
    pids = [pid for pid in descendants(server.process.pid) if _is_worker(pid) and rss_mb(pid) > 0]
    pids.sort(key=rss_mb, reverse=True)
    return pids


async def prepare(work: Path, redis: bool) -> tuple[Path, str, dict[str, str], dict[str, str]]:
    """Settings, a signed-up verified account on a plan with API keys, an access token and an API key."""
    from botcriptofy import Runtime

    settings_dir, database = await settings_dir_for(work, redis)
    runtime = Runtime(settings_dir, env="development", discover=True, watch=False)
    await runtime.start()
    try:
        jwt_headers, key_headers = await credentials(runtime)
    finally:
        await runtime.stop()
    as_dict = lambda pairs: {k.decode(): v.decode() for k, v in pairs}  # noqa: E731
    return settings_dir, database, as_dict(jwt_headers), as_dict(key_headers)


def throughput(work: Path, settings_dir: Path, jwt: dict[str, str], key: dict[str, str], duration: int, pin: bool) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    bare_runs = []
    bare = bare_server(work, 1, pin)
    try:
        bare_runs.append(wrk(f"{bare.base}/json", work, {}, duration, pin))
    finally:
        bare.stop()
    for name, headers in (("jwt", jwt), ("api_key", key)):
        server = kernel_server(settings_dir, work, 1, pin)
        try:
            assert (
                subprocess.run(
                    [
                        "curl",
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        f"{server.base}/v1/me",
                        *[part for k, v in headers.items() for part in ("-H", f"{k}: {v}")],
                    ],
                    capture_output=True,
                    text=True,
                ).stdout
                == "200"
            )
            runs[name] = wrk(f"{server.base}/v1/me", work, headers, duration, pin)
        finally:
            server.stop()
        bare = bare_server(work, 1, pin)
        try:
            bare_runs.append(wrk(f"{bare.base}/json", work, {}, duration, pin))
        finally:
            bare.stop()
        baseline = statistics.mean(r["requests_per_s"] for r in bare_runs[-2:])
        runs[name]["baseline_requests_per_s"] = round(baseline)
        runs[name]["ratio_to_bare"] = round(runs[name]["requests_per_s"] / baseline, 3)
    runs["bare"] = bare_runs
    return runs


def latency(work: Path, settings_dir: Path, jwt: dict[str, str], key: dict[str, str], rate: float, duration: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bare = bare_server(work, 2, False)
    try:
        out["bare"] = asyncio.run(open_loop("127.0.0.1", bare.port, "/json", rate=rate, duration=duration)).summary()
    finally:
        bare.stop()
    server = kernel_server(settings_dir, work, 2, False)
    try:
        for name, headers in (("jwt", jwt), ("api_key", key)):
            asyncio.run(open_loop("127.0.0.1", server.port, "/v1/me", rate=rate, duration=2, headers=headers))  # warm both workers
            out[name] = asyncio.run(open_loop("127.0.0.1", server.port, "/v1/me", rate=rate, duration=duration, headers=headers)).summary()
    finally:
        server.stop()
    return out


async def _mixed(port: int, rate: float, seconds: float, jwt: dict[str, str], key: dict[str, str]) -> list[dict[str, Any]]:
    share = rate / 4
    runs = await asyncio.gather(
        open_loop("127.0.0.1", port, "/v1/me", rate=share, duration=seconds, headers=jwt),
        open_loop("127.0.0.1", port, "/v1/me", rate=share, duration=seconds, headers=key),
        open_loop("127.0.0.1", port, "/v1/me", rate=share, duration=seconds),  # anonymous: 401
        open_loop("127.0.0.1", port, "/-/health", rate=share, duration=seconds),
    )
    return [run.summary() for run in runs]


def rss(work: Path, settings_dir: Path, jwt: dict[str, str], key: dict[str, str], minutes: float, rate: float) -> dict[str, Any]:
    server = kernel_server(settings_dir, work, 2, False)
    samples: list[dict[str, Any]] = []
    try:
        started = time.monotonic()
        total = minutes * 60
        while time.monotonic() - started < total:
            chunk = min(30.0, total - (time.monotonic() - started))
            summaries = asyncio.run(_mixed(server.port, rate, chunk, jwt, key))
            pids = workers_of(server)
            samples.append(
                {
                    "minute": round((time.monotonic() - started) / 60, 2),
                    "rss_mb": {str(pid): round(rss_mb(pid), 1) for pid in pids},
                    "p99_ms": [s["p99_ms"] for s in summaries],
                    "failures": sum(int(s["failures"]) for s in summaries) - summaries[2]["statuses"].get("401", 0),
                    "load_average": load(),
                }
            )
            print(json.dumps(samples[-1]), flush=True)
    finally:
        server.stop()
    return {"rate": rate, "minutes": minutes, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", dest="only", action="append", default=[], help="embedded or redis")
    parser.add_argument("--duration", type=int, default=10, help="Seconds of each wrk run.")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--rss-minutes", type=float, default=5.0, help="Minutes of mixed load with RSS samples (0: skip).")
    parser.add_argument("--rss-rate", type=float, default=300.0)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--no-pin", dest="pin", action="store_false", default=(os.cpu_count() or 1) >= 2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.skip_throughput:
        need("wrk")
    report: dict[str, Any] = {"machine": machine(), "load_average_start": os.getloadavg()}
    print(report, flush=True)
    for name in ("embedded", "redis"):
        if args.only and name not in args.only:
            continue
        with scratch(f"bcf-rp-http-{name}-") as work:
            settings_dir, database, jwt, key = asyncio.run(prepare(work, name == "redis"))
            try:
                result: dict[str, Any] = {}
                if not args.skip_throughput:
                    result["throughput"] = throughput(work, settings_dir, jwt, key, args.duration, args.pin)
                    print(name, "throughput", json.dumps(result["throughput"]), flush=True)
                if not args.skip_latency:
                    result["open_loop"] = latency(work, settings_dir, jwt, key, args.rate, args.latency_seconds)
                    print(name, "open loop", json.dumps(result["open_loop"]), flush=True)
                if args.rss_minutes:
                    result["rss"] = rss(work, settings_dir, jwt, key, args.rss_minutes, args.rss_rate)
                report[name] = result
            finally:
                asyncio.run(drop_database(database))
    report["load_average_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
