"""The audit agent's cost on ``kernel.audit``: it implements ``record_audit`` (window updates only).

Run by hand (never by the tests)::

    .venv/bin/python bench/agent_audit_path_bench.py        # about a minute on 2 cores

In process, a route that records an ``auth.user_lookup`` entry (one staff account, a new tenant each
time, so the window grows and fires) with the agent enabled vs the same route on a kernel where it is
disabled, alternating rounds. No audit plugin is loaded: the entry costs only the broadcast, so the
ratio is the agent's share. The agents' decision latencies, the audit and CEO agents' included, are
measured by ``bench/agents_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, percentile

import botcriptofy_agent_audit
import botcriptofy_agents
from botcriptofy import Route, hookimpl, kernel_of
from botcriptofy.testing import render_settings
from botcriptofy_agents import runner_of


class Reader:
    """A route that records one staff read of a tenant, as ``/user`` does."""

    @hookimpl
    def register_routes(self, kernel: Any) -> list[Route]:
        async def read(request: Any) -> dict[str, bool]:
            n = int(request.query_params.get("n", "0"))
            await kernel_of(request).audit(
                "auth.user_lookup", actor_id="staff-1", actor_kind="user", target=f"user:{n}", details={"tenant_id": f"t-{n}"}
            )
            return {"ok": True}

        return [Route("/bench/read", read)]


_made: list[int] = []


async def _runtime(work: Path, settings: dict[str, Any], plugins: dict[str, Any]) -> Any:
    from botcriptofy import Runtime

    _made.append(1)
    directory = work / f"settings-{len(_made)}"
    directory.mkdir()
    (directory / "settings.toml").write_text(render_settings(settings, state_dir=directory / "state"))
    runtime = Runtime(directory, env="testing", plugins=plugins, discover=False, watch=False)
    await runtime.start()
    return runtime


async def _latencies(client: httpx.AsyncClient, count: int, offset: int) -> list[float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        response = await client.get("/bench/read", params={"n": offset + i})
        samples.append((time.perf_counter() - started) * 1e3)
        assert response.status_code == 200, response.text
        await asyncio.sleep(0)
    return samples


async def bench_audit_path(work: Path, requests: int, rounds: int) -> dict[str, Any]:
    settings = {"agent_audit": {"verify_interval": 3600, "access_tenants": 20, "access_revoke_tenants": 50}}
    plugins = {"agents": botcriptofy_agents, "agent_audit": botcriptofy_agent_audit, "reader": Reader()}
    enabled = await _runtime(work, settings, plugins)
    disabled = await _runtime(work, {**settings, "plugins": {"disabled": ["agent_audit"]}}, plugins)
    on: list[float] = []
    off: list[float] = []
    try:
        clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=r), base_url="http://bench") for r in (enabled, disabled)]
        try:
            await _latencies(clients[0], 100, 10**6)  # warm both
            await _latencies(clients[1], 100, 10**6)
            for round_ in range(rounds):
                on += await _latencies(clients[0], requests, round_ * requests)
                off += await _latencies(clients[1], requests, round_ * requests)
            runner = runner_of(enabled.current, botcriptofy_agent_audit.AGENT)
            decided = runner.decided if runner is not None else 0
        finally:
            for client in clients:
                await client.aclose()
    finally:
        await enabled.stop()
        await disabled.stop()
    result = {
        "requests": len(on),
        "enabled_p50_ms": round(statistics.median(on), 3),
        "enabled_p95_ms": round(percentile(on, 95), 3),
        "disabled_p50_ms": round(statistics.median(off), 3),
        "disabled_p95_ms": round(percentile(off, 95), 3),
        "ratio_p50": round(statistics.median(on) / statistics.median(off), 3),
        "ratio_p95": round(percentile(on, 95) / percentile(off, 95), 3),
        "decisions_in_background": decided,
    }
    print(json.dumps(result), flush=True)
    return result


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per round and kernel")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bcf-agent-audit-bench-") as scratch:
        path = await bench_audit_path(Path(scratch), args.requests, args.rounds)
    print(
        f"\nkernel.audit path (/bench/read, {path['requests']} requests each): enabled p50 {path['enabled_p50_ms']} ms "
        f"p95 {path['enabled_p95_ms']} ms vs disabled p50 {path['disabled_p50_ms']} ms p95 {path['disabled_p95_ms']} ms "
        f"(ratio p50 {path['ratio_p50']}, p95 {path['ratio_p95']}; {path['decisions_in_background']} decisions off the path)"
    )
    print(machine(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
