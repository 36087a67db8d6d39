"""Routing cost with many plugins: the kernel's indexed router against a flat route scan.

The kernel builds one Starlette app per generation from every plugin's routes. Starlette's ``Router``
tries each route's regex in turn, so a route declared late pays for every route before it; the
kernel's ``IndexedRouter`` finds a route without path parameters with one dictionary lookup. This
script builds the generation of EVERY installed plugin in process (no server, no network) and times,
with uvloop, each path through:

- ``kernel``: the generation's own router (``IndexedRouter``), as served;
- ``flat``: a plain Starlette ``Router`` over the same routes in the same order (the scan);
- ``moved first`` (the baseline, measured in the same run): a plain router with the requested route
  moved to the front, so nothing else is tried before it.

Usage: ``python bench/kernel_routing.py [--requests 20000] [--path /-/health ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_overrides, machine


async def drive(app: Any, kernel: Any, path: str, count: int) -> float:
    body = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return body

    async def send(message: dict[str, Any]) -> None:
        return None

    base = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "query_string": b"", "root_path": "", "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80), "path": path, "raw_path": path.encode(), "botcriptofy.kernel": kernel}
    started = time.perf_counter()
    for _ in range(count):
        # A bare router re-raises the 401 of an authenticated route: the same cost in both orders.
        with contextlib.suppress(Exception):
            await app(dict(base), receive, send)
    return (time.perf_counter() - started) / count


async def run(paths: list[str], count: int, rounds: int) -> int:
    from starlette.routing import Router

    from botcriptofy import Runtime

    with tempfile.TemporaryDirectory(prefix="bench-routing-") as scratch:
        directory = Path(scratch)
        (directory / "settings.toml").write_text(f'[default.kernel]\nstate_dir = "{directory / "var"}"\n' + bench_overrides())
        runtime = Runtime(directory, watch=False)
        await runtime.start()
        try:
            kernel = runtime.current
            assert kernel is not None and kernel.app is not None
            routes = list(kernel.app.routes)
            print(f"# {len(routes)} routes from plugins: {', '.join(sorted(kernel.plugins))}")
            for path in paths:
                position = next((i for i, r in enumerate(routes) if getattr(r, "path", None) == path), None)
                if position is None:
                    print(f"{path}: no such route")
                    continue
                indexed = kernel.app.router
                flat = Router(routes=routes)
                moved = Router(routes=[routes[position], *routes[:position], *routes[position + 1 :]])
                for router in (indexed, flat, moved):
                    await drive(router, kernel, path, 1000)
                timings: dict[str, list[float]] = {"kernel": [], "flat": [], "moved": []}
                for _ in range(rounds):
                    for name, router in (("kernel", indexed), ("flat", flat), ("moved", moved)):
                        timings[name].append(await drive(router, kernel, path, count))
                best = {name: min(values) for name, values in timings.items()}
                print(
                    f"GET {path:<14} position {position:>3}/{len(routes)}: kernel {best['kernel'] * 1e6:6.2f} µs "
                    f"(ratio {best['kernel'] / best['moved']:.2f}), flat scan {best['flat'] * 1e6:6.2f} µs "
                    f"(ratio {best['flat'] / best['moved']:.2f}), moved first {best['moved'] * 1e6:6.2f} µs (baseline)"
                )
        finally:
            await runtime.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--path", dest="paths", action="append", default=None)
    args = parser.parse_args()
    print(f"# kernel_routing: {machine()}")
    import logging

    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop

        return uvloop.run(run(args.paths or ["/-/health", "/v1/me"], args.requests, args.rounds))
    except ImportError:  # pragma: no cover
        return asyncio.run(run(args.paths or ["/-/health", "/v1/me"], args.requests, args.rounds))


if __name__ == "__main__":
    sys.exit(main())
