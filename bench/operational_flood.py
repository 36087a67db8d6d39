"""What a flood of the operational endpoints costs the service: they are public by default and exempt from rate limiting.

Starts ``botcriptofy serve --workers 2`` with every installed plugin (a temporary settings directory,
``kernel.operations_access`` left at its default, ``public``), then floods ``GET /-/health`` (the
baseline), ``/metrics``, ``/-/plugins``, ``/-/ready`` and ``/openapi.json`` in turn with
``wrk -t1 -c16`` and reads the workers' CPU time from ``/proc``: the CPU a worker spends per flooding
request, as a ratio to a ``/-/health`` request of the same run, is what an attacker gains per
request sent. (Requests/s of a flood run on the same 2-core machine mostly measure wrk's own share of
the CPU: a remote attacker is bound by the network instead, ~260 answers of 480 KB per second per Gbit/s.)

``--no-reuse`` runs the server with ``observability.metrics_reuse_seconds = 0`` (every scrape renders),
as before scrapes shared renders. Usage: ``python bench/operational_flood.py [--duration 8] [--no-reuse]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    bench_overrides,
    free_port,
    installed_plugins,
    kernel_server,
    lua_script,
    machine,
    parse_wrk,
    scratch,
    write_settings,
    wrk_command,
)
from request_path_http import _is_worker, descendants

ENDPOINTS = ("/metrics", "/-/plugins", "/-/ready", "/openapi.json")


def load() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds of each flood")
    parser.add_argument("--no-reuse", action="store_true", help="observability.metrics_reuse_seconds = 0")
    args = parser.parse_args()
    print(machine(), f"load average {load()}", flush=True)
    with scratch("bcf-operational-flood-") as work:
        settings_dir = work / "settings"
        settings_dir.mkdir()
        extra = bench_overrides()
        if args.no_reuse and "observability" in installed_plugins():
            extra += "\n[default.observability]\nmetrics_reuse_seconds = 0\n"
        write_settings(settings_dir, state_dir=work / "state", extra=extra)
        server = kernel_server("flood", settings_dir, port=free_port(), workers=2, log_dir=work, env={"BOTCRIPTOFY_ENV": "development"})
        server.wait_ready(timeout=120)
        workers = [pid for pid in descendants(server.process.pid) if _is_worker(pid)]
        script = lua_script(work)
        baseline = 0.0
        try:
            for endpoint in ("/-/health", *ENDPOINTS):
                url = f"{server.base}{endpoint}"
                subprocess.run(wrk_command(url, script, threads=1, connections=16, duration="1s"), check=True, capture_output=True)
                before = cpu_seconds(workers)
                result = parse_wrk(
                    subprocess.run(
                        wrk_command(url, script, threads=1, connections=16, duration=f"{args.duration}s"),
                        check=True, capture_output=True, text=True,
                    ).stdout
                )
                per_request = (cpu_seconds(workers) - before) / max(result.requests, 1)
                baseline = baseline or per_request
                print(
                    f"{endpoint:14} {result.rps:9,.0f} req/s ({result.non_2xx_3xx} non-2xx), worker CPU per request "
                    f"{per_request * 1e3:8.3f} ms = {per_request / baseline:8.1f}x /-/health | load average {load()}",
                    flush=True,
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
