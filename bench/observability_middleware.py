"""Per-request cost of the observability plugin's request metrics.

Three measurements, each against a baseline measured in the same run:

1. in process (no network, no server): a Starlette app with a templated JSON route is called
   directly through ASGI, with and without ``RequestMetricsMiddleware`` (how an app served without
   the kernel takes the metrics); the difference per request is the middleware's own cost (a layer,
   clock reads, wrapped ``send``, series look-up, histogram);
2. in process, the kernel: a runtime with only the built-in plugin and the same route, called through
   ASGI with the generation's response observers empty and then holding the plugin's
   ``RequestMetrics`` (how the plugin takes them under the kernel: the edge reads the clock and calls it);
3. over HTTP with wrk (unless ``--no-wrk``): ``botcriptofy serve`` with only the observability
   plugin enabled against the same server with it disabled, one uvicorn worker each,
   ``wrk -t2 -c50 -d10s --latency`` on ``/-/health``, alternating.

Usage: ``python bench/observability_middleware.py [--requests 10000] [--rounds 30] [--no-wrk]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import free_port, installed_plugins, kernel_server, lua_script, machine, need, run_wrk, scratch, write_settings


def build_apps() -> tuple[object, object]:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from botcriptofy_observability import RequestMetricsMiddleware
    from botcriptofy_observability._metrics import HttpMetrics

    async def item(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"id": request.path_params["id"]})

    routes = [Route("/v1/other/{x}", item), Route("/v1/items/{id:int}", item)]
    bare = Starlette(routes=routes)
    metered = Starlette(routes=routes, middleware=[Middleware(RequestMetricsMiddleware, http=HttpMetrics(), generation=1,
                                                              slow_request_ms=1000.0)])
    return bare, metered


async def drive(app: object, count: int) -> float:
    """Call ``app`` ``count`` times with a GET /v1/items/<n>; return seconds per request."""
    body = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, object]:
        return body

    async def send(message: dict[str, object]) -> None:
        return None

    scope_base = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
                  "query_string": b"", "root_path": "", "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1),
                  "server": ("127.0.0.1", 80)}
    started = time.perf_counter()
    for n in range(count):
        scope = dict(scope_base)
        scope["path"] = f"/v1/items/{n % 100}"
        scope["raw_path"] = scope["path"].encode()
        await app(scope, receive, send)  # type: ignore[operator]
    return (time.perf_counter() - started) / count


async def in_process(count: int, rounds: int) -> tuple[float, float]:
    bare, metered = build_apps()
    await drive(bare, 2000)
    await drive(metered, 2000)
    bare_times, metered_times = [], []
    for _ in range(rounds):
        bare_times.append(await drive(bare, count))
        metered_times.append(await drive(metered, count))
    return min(bare_times), min(metered_times)


async def kernel_in_process(count: int, rounds: int) -> tuple[float, float]:
    """Seconds per request through a kernel generation without and with the request-metrics observer."""
    from botcriptofy import Route, Runtime, hookimpl
    from botcriptofy.testing import render_settings
    from botcriptofy_observability import RequestMetrics
    from botcriptofy_observability._metrics import HttpMetrics

    class Items:
        @hookimpl
        def register_routes(self, kernel):  # type: ignore[no-untyped-def]
            async def item(request):  # type: ignore[no-untyped-def]
                from starlette.responses import JSONResponse

                return JSONResponse({"id": request.path_params["id"]})

            return [Route("/v1/other/{x}", item), Route("/v1/items/{id:int}", item)]

    with scratch("bench-obs-kernel-") as tmp:
        (tmp / "settings.toml").write_text(render_settings({"kernel": {"state_dir": str(tmp / "var")}}))
        runtime = Runtime(tmp, env="testing", plugins={"items": Items()}, discover=False, watch=False)
        await runtime.start()
        try:
            kernel = runtime.current
            assert kernel is not None
            observed = (RequestMetrics(http=HttpMetrics(), generation=1, slow_request_ms=1000.0),)
            times: dict[bool, list[float]] = {False: [], True: []}
            for observers in ((), observed):
                kernel.response_observers = observers
                await drive(runtime, 2000)
            for _ in range(rounds):
                for metered, observers in ((False, ()), (True, observed)):
                    kernel.response_observers = observers
                    times[metered].append(await drive(runtime, count))
        finally:
            await runtime.stop()
    return min(times[False]), min(times[True])


def over_http(duration: str) -> None:
    need("wrk")
    with scratch("bench-obs-") as tmp:
        installed = installed_plugins()
        others = [name for name in installed if name != "observability"]
        with_dir, without_dir = tmp / "with", tmp / "without"
        with_dir.mkdir()
        without_dir.mkdir()
        write_settings(with_dir, state_dir=tmp / "var-with", disabled=others)
        write_settings(without_dir, state_dir=tmp / "var-without", disabled=installed)
        servers = [kernel_server("core", without_dir, port=free_port(), workers=1, log_dir=tmp),
                   kernel_server("core+observability", with_dir, port=free_port(), workers=1, log_dir=tmp)]
        try:
            for server in servers:
                server.wait_ready()
            script = lua_script(tmp)
            for server in servers:
                run_wrk(server.base + "/-/health", script, duration="2s")
            results: dict[str, list[float]] = {server.name: [] for server in servers}
            p95: dict[str, list[float]] = {server.name: [] for server in servers}
            for round_number in (1, 2):
                for server in servers:
                    result = run_wrk(server.base + "/-/health", script, duration=duration)
                    results[server.name].append(result.rps)
                    p95[server.name].append(result.p95_ms)
                    print(f"round {round_number}  {server.name:<19} {result.line()}", flush=True)
        finally:
            for server in servers:
                server.stop()
    base, metered = (statistics.median(results[s.name]) for s in servers)
    print(f"over HTTP: core {base:.0f} req/s, core+observability {metered:.0f} req/s, ratio {metered / base:.3f}; "
          f"p95 {statistics.median(p95['core']):.2f} -> {statistics.median(p95['core+observability']):.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests per round (in process)")
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds (in process); the best of each is kept")
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--no-wrk", action="store_true")
    args = parser.parse_args()
    print(f"# observability_middleware: {machine()}")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    bare, metered = runner(in_process(args.requests, args.rounds))
    print(f"in process ({args.requests} requests x {args.rounds} rounds, best round): bare Starlette {bare * 1e6:.2f} µs/request, "
          f"with the middleware {metered * 1e6:.2f} µs/request -> middleware cost {(metered - bare) * 1e6:.2f} µs/request, "
          f"ratio {bare / metered:.3f} of the baseline throughput")
    plain, observed = runner(kernel_in_process(args.requests, args.rounds))
    print(f"in process, the kernel (only its built-in plugin): without the observer {plain * 1e6:.2f} µs/request, "
          f"with RequestMetrics as a response observer {observed * 1e6:.2f} µs/request -> its cost {(observed - plain) * 1e6:.2f} "
          f"µs/request, ratio {plain / observed:.3f} of the baseline throughput")
    if not args.no_wrk:
        over_http(args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
