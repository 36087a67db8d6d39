"""Per-request cost of the kernel's HTTP edge: security headers, error boundary and the Idempotency-Key check.

In process (no network, no server): a Starlette app with one JSON route is called directly through
ASGI, bare (the baseline, measured in the same run, alternating), behind ``EdgeMiddleware``, and
behind ``EdgeMiddleware`` + ``IdempotencyMiddleware`` (a ``GET``, which the idempotency check passes
straight through, and a ``POST /v1`` without the header, which it also passes through).

Usage: ``python bench/http_edge.py [--requests 10000] [--rounds 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from types import SimpleNamespace
from typing import Any


def build_apps() -> dict[str, Any]:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from botcriptofy import KernelSettings, Stash
    from botcriptofy._edge import EdgeMiddleware
    from botcriptofy._idempotency import IdempotencyMiddleware

    async def item(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"ok": True})

    bare = Starlette(routes=[Route("/v1/items", item, methods=["GET", "POST"])])
    kernel: Any = SimpleNamespace(kernel_settings=KernelSettings(), stash=Stash())
    edge = EdgeMiddleware(bare, kernel=kernel)
    both = EdgeMiddleware(IdempotencyMiddleware(bare, kernel=kernel), kernel=kernel)
    return {"bare (baseline)": bare, "edge": edge, "edge + idempotency": both}


async def drive(app: Any, count: int, method: str) -> float:
    """Call ``app`` ``count`` times; return seconds per request."""
    body = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, object]:
        return body

    async def send(message: dict[str, object]) -> None:
        return None

    scope_base = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/v1/items",
        "raw_path": b"/v1/items",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    started = time.perf_counter()
    for _ in range(count):
        await app(dict(scope_base), receive, send)
    return (time.perf_counter() - started) / count


async def measure(count: int, rounds: int) -> None:
    apps = build_apps()
    for method in ("GET", "POST"):
        for app in apps.values():
            await drive(app, 2000, method)
        best: dict[str, float] = {name: float("inf") for name in apps}
        for _ in range(rounds):
            for name, app in apps.items():
                best[name] = min(best[name], await drive(app, count, method))
        base = best["bare (baseline)"]
        for name, seconds in best.items():
            print(f"{method:<4} {name:<22} {seconds * 1e6:7.2f} µs/request  ratio {seconds / base:.3f}  (+{(seconds - base) * 1e6:.2f} µs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    arguments = parser.parse_args()
    asyncio.run(measure(arguments.requests, arguments.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
