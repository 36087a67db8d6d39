"""Kernel throughput against a bare Starlette app, measured in the same run with wrk.

Starts, each as a subprocess with one uvicorn worker on a free port:

- ``bare``: a bare Starlette app with one trivial JSON route (the baseline);
- ``kernel``: ``botcriptofy serve`` over a temporary settings directory with EVERY installed plugin
  enabled, serving the kernel's trivial ``GET /-/health``;
- ``core`` (unless ``--no-core``): the same server with every installed plugin disabled, so the cost of
  the kernel itself and the cost of the plugins' middleware can be told apart;
- with ``--leave-one-out``, ``-<plugin>`` for each installed plugin: every plugin enabled but that one
  (what a plugin costs is the gain of leaving it out).

Then runs ``wrk -t2 -c50 -d10s --latency`` against each in turn, alternating, for ``--rounds`` rounds, and
prints req/s, p50 and p95 of each run, the median of the rounds, and the ratios against the baseline.
Usage: ``python bench/kernel_throughput.py [--rounds 2] [--duration 10s]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Server,
    WrkResult,
    free_port,
    installed_plugins,
    kernel_server,
    lua_script,
    machine,
    need,
    run_wrk,
    scratch,
    write_settings,
)

BARE_APP = '''
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def health(request):
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/-/health", health)])
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds over the servers (default 2)")
    parser.add_argument("--duration", default="10s", help="wrk duration of each run (default 10s)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-core", action="store_true", help="skip the kernel-with-no-plugins server")
    parser.add_argument("--leave-one-out", action="store_true",
                        help="also serve every plugin but one, for each installed plugin, to attribute the cost to plugins")
    args = parser.parse_args()
    need("wrk")
    print(f"# kernel_throughput: {machine()}")
    print(f"# wrk -t{args.threads} -c{args.connections} -d{args.duration} --latency, {args.rounds} alternating round(s), "
          "one uvicorn worker per server")

    with scratch("bench-throughput-") as tmp:
        (tmp / "bare_app.py").write_text(BARE_APP)
        servers: list[Server] = []
        try:
            port = free_port()
            servers.append(Server("bare", [sys.executable, "-m", "uvicorn", "bare_app:app", "--host", "127.0.0.1", "--port", str(port),
                                           "--workers", "1", "--no-access-log", "--log-level", "warning"],
                                  port=port, health="/-/health", cwd=tmp, log_dir=tmp))
            settings = tmp / "settings"
            settings.mkdir()
            write_settings(settings, state_dir=tmp / "var")
            servers.append(kernel_server("kernel", settings, port=free_port(), workers=1, log_dir=tmp))
            if not args.no_core:
                core_settings = tmp / "settings-core"
                core_settings.mkdir()
                installed = installed_plugins()
                write_settings(core_settings, state_dir=tmp / "var-core", disabled=installed)
                servers.append(kernel_server("core", core_settings, port=free_port(), workers=1, log_dir=tmp))
            if args.leave_one_out:
                for plugin in installed_plugins():
                    directory = tmp / f"settings-no-{plugin}"
                    directory.mkdir()
                    write_settings(directory, state_dir=tmp / f"var-no-{plugin}", disabled=[plugin])
                    servers.append(kernel_server(f"-{plugin}", directory, port=free_port(), workers=1, log_dir=tmp))
            for server in servers:
                server.wait_ready()
            _describe_plugins(servers)
            script = lua_script(tmp)
            for server in servers:  # warm up: imports, first-request caches, uvloop
                run_wrk(server.base + "/-/health", script, threads=args.threads, connections=args.connections, duration="2s")
            results: dict[str, list[WrkResult]] = {server.name: [] for server in servers}
            for round_number in range(1, args.rounds + 1):
                for server in servers:
                    result = run_wrk(server.base + "/-/health", script, threads=args.threads, connections=args.connections,
                                     duration=args.duration)
                    results[server.name].append(result)
                    print(f"round {round_number}  {server.name:<14} {result.line()}", flush=True)
        finally:
            for server in servers:
                server.stop()

    print()
    print(f"{'server':<14} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'req/s ratio':>12} {'p50 ratio':>10} {'p95 ratio':>10}"
          "  (median of the rounds; ratios against bare)")
    base = _median(results["bare"])
    failures = 0
    for name, runs in results.items():
        med = _median(runs)
        failures += sum(run.failures for run in runs)
        print(f"{name:<14} {med['rps']:>9.0f} {med['p50']:>8.2f} {med['p95']:>8.2f} {med['rps'] / base['rps']:>12.3f} "
              f"{med['p50'] / base['p50']:>10.2f} {med['p95'] / base['p95']:>10.2f}")
    kernel = _median(results["kernel"])
    print(f"\nkernel/bare throughput ratio: {kernel['rps'] / base['rps']:.3f}  (failed requests in all runs: {failures})")
    return 1 if failures else 0


def _median(runs: list[WrkResult]) -> dict[str, float]:
    return {"rps": statistics.median(r.rps for r in runs), "p50": statistics.median(r.p50_ms for r in runs),
            "p95": statistics.median(r.p95_ms for r in runs)}


def _describe_plugins(servers: list[Server]) -> None:
    for server in servers:
        if server.name == "bare":
            continue
        listed = server.get_json("/-/plugins")
        assert isinstance(listed, dict)
        enabled = [p["name"] for p in listed["plugins"] if p["enabled"]]
        refused = [f"{p['name']} ({p['error']})" for p in listed["plugins"] if p["error"]]
        print(f"# {server.name}: enabled plugins: {', '.join(enabled)}" + (f"; REFUSED: {'; '.join(refused)}" if refused else ""))


if __name__ == "__main__":
    sys.exit(main())
