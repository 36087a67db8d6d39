"""Per-request cost of tracing (OpenTelemetry server spans exported over OTLP/HTTP) by sampling ratio.

In process (no network between client and app): a Starlette app with a templated JSON route, the
plugin's request-metrics middleware and its tracing middleware, called directly through ASGI. Four
configurations are measured in alternating rounds of the same run: tracing off (the baseline: the
tracing middleware passes requests through), and tracing on with sampling ratio 0, 0.1 and 1.0. The
spans go to a local OTLP/HTTP receiver (a thread answering 200 to every export), so batching,
encoding and posting happen as in production, on the exporter's own thread.

Usage: ``python bench/observability_tracing.py [--requests 5000] [--rounds 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine


class Receiver(BaseHTTPRequestHandler):
    """Accepts every OTLP export (counting the bytes) and answers 200."""

    received = 0

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        Receiver.received += len(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


def settings(endpoint: str, ratio: float) -> SimpleNamespace:
    return SimpleNamespace(tracing_endpoint=endpoint, tracing_headers={}, tracing_sampling_ratio=ratio,
                           tracing_slow_hook_ms=10.0, tracing_export_delay_ms=500.0)


def build_app(tracing: object) -> object:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from botcriptofy_observability import RequestMetricsMiddleware, TracingMiddleware
    from botcriptofy_observability._metrics import HttpMetrics

    async def item(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"id": request.path_params["id"]})

    return Starlette(routes=[Route("/v1/items/{id:int}", item)], middleware=[
        Middleware(RequestMetricsMiddleware, http=HttpMetrics(), generation=1, slow_request_ms=1000.0),
        Middleware(TracingMiddleware, tracing=tracing),
    ])


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


async def run(count: int, rounds: int, endpoint: str) -> dict[str, float]:
    from botcriptofy_observability import Tracing

    configurations: dict[str, tuple[object, object]] = {}
    for name, ratio in (("off", None), ("ratio 0", 0.0), ("ratio 0.1", 0.1), ("ratio 1.0", 1.0)):
        tracing = Tracing()
        tracing.apply(settings("" if ratio is None else endpoint, ratio or 0.0))
        configurations[name] = (tracing, build_app(tracing))
    best: dict[str, float] = {}
    try:
        for round_number in range(rounds + 1):  # the first round warms up and is not kept
            for name, (_, app) in configurations.items():
                for other, (other_tracing, _app) in configurations.items():
                    other_tracing.enabled = other == name and name != "off"  # one provider active at a time
                seconds = await drive(app, count)
                if round_number:
                    best[name] = min(best.get(name, seconds), seconds)
    finally:
        for tracing, _ in configurations.values():
            tracing.close()  # type: ignore[attr-defined]
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5_000, help="requests per configuration and round")
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds; the best of each is kept")
    options = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    try:
        best = asyncio.run(run(options.requests, options.rounds, endpoint))
    finally:
        server.shutdown()
    print(machine())
    base = best["off"]
    print(f"{'configuration':<12} {'us/request':>10} {'added us':>9} {'ratio to off':>12}")
    for name, seconds in best.items():
        print(f"{name:<12} {seconds * 1e6:>10.1f} {(seconds - base) * 1e6:>9.1f} {seconds / base:>12.2f}")
    print(f"OTLP bytes received: {Receiver.received}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
