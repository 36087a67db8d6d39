"""Department agents benchmark: decision latency per provider, schema-valid rate, and the cost on the request path.

Run by hand (never by the tests)::

    .venv/bin/python bench/agents_bench.py                  # ~1-2 minutes on 2 cores
    .venv/bin/python bench/agents_bench.py --requests 1000 --model-repeats 1
    .venv/bin/python bench/agents_bench.py --agent agent_finance --agent agent_subscriptions   # only their cases

1. **Decision latency per provider** over every shipped case (``cases.jsonl`` of each agent): the
   ``rules`` provider (the baseline) and ``ollama`` through the official client against the local
   Ollama-API server backed by SmolLM2-135M (llama-cpp-python, grammar-constrained JSON, one thread
   unless ``--threads``); p50/p95 of ``decide()`` as the runtime runs it, the schema-valid rate of the
   model's answers, action accuracy, fallbacks, prompt and answer tokens.
2. **Added latency on the request that emitted the event**: in process (httpx over ASGI), a route
   that publishes ``auth.login_failed`` with no outbox (the worst case: the agent's handler runs
   inside ``publish``) with the security agent enabled vs the same route on a kernel where it is
   disabled, alternating rounds, and a second disabled kernel in the same rounds (disabled vs
   disabled: the noise floor the ratio is judged against); the agent's worker decides off the
   request path meanwhile (without the auth plugin its principal holds no permission, so the rules
   record ``forbidden``). The ratios are printed per round, so their spread is visible. Then the same
   with the storage plugin on every kernel (unless ``--no-outbox``), as deployed: ``publish`` writes
   the outbox row in a transaction of its own and the relay delivers to the agent after the commit.
   Back to back, the agent's work between two requests lands on the next one (the throughput it
   costs); with ``--interval-ms`` (default 5) both shapes are measured again at one request per
   interval, so each request is timed on its own path: the latency of the request that emitted the
   event. The model server runs in a process of its own pinned to the last core, the bench on the
   others, as Ollama runs beside the service (on a thread of the bench it took the interpreter's
   lock between tokens, and the requests waited for it).

Every figure is printed with the load average at that moment (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "plugins" / "agents"))

from _common import machine, percentile
from ollama_server import MODEL_NAME, LocalOllama

import botcriptofy_agent_audit
import botcriptofy_agent_ceo
import botcriptofy_agent_configuration
import botcriptofy_agent_finance
import botcriptofy_agent_security
import botcriptofy_agent_subscriptions
import botcriptofy_agents
import botcriptofy_storage
from botcriptofy import Route, hookimpl, kernel_of
from botcriptofy.testing import render_settings
from botcriptofy_agents import evaluate, load_cases, runner_of, settings_of
from botcriptofy_auth._events import LoginFailed


class Emitter:
    @hookimpl
    def register_routes(self, kernel: Any) -> list[Route]:
        async def failed(request: Any) -> dict[str, bool]:
            n = int(request.query_params.get("n", "0"))
            event = LoginFailed(
                email=f"user{n % 50}@example.com",
                user_id=f"u-{n % 50}",
                tenant_id="t-1",
                reason="bad_password",
                failures=1,
                ip=f"10.0.{n % 7}.1",
            )
            await kernel_of(request).events.publish(event)
            return {"ok": True}

        return [Route("/bench/login-failed", failed)]


_made: list[int] = []


def load() -> str:
    """The 1-, 5- and 15-minute load averages, printed with every figure."""
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


async def _runtime(work: Path, settings: dict[str, Any], plugins: dict[str, Any]) -> Any:
    from botcriptofy import Runtime

    _made.append(1)
    directory = work / f"settings-{len(_made)}"
    directory.mkdir()
    (directory / "settings.toml").write_text(render_settings(settings, state_dir=directory / "state"))
    runtime = Runtime(directory, env="testing", plugins=plugins, discover=False, watch=False)
    await runtime.start()
    return runtime


async def bench_decisions(
    work: Path, server: LocalOllama, model_repeats: int, rules_repeats: int, budget: float, only: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    plugins = {
        "agents": botcriptofy_agents,
        "agent_security": botcriptofy_agent_security,
        "agent_configuration": botcriptofy_agent_configuration,
        "agent_finance": botcriptofy_agent_finance,
        "agent_subscriptions": botcriptofy_agent_subscriptions,
        "agent_audit": botcriptofy_agent_audit,
        "agent_ceo": botcriptofy_agent_ceo,
    }
    common = {"provider": "ollama", "model": MODEL_NAME, "host": server.url, "timeout": budget}
    sections = {
        "agent_security": common,
        "agent_configuration": {**common, "sample_interval": 3600},
        "agent_finance": {**common, "check_interval": 3600},
        "agent_subscriptions": {**common, "check_interval": 3600},
        "agent_audit": common,
        "agent_ceo": common,
    }
    runtime = await _runtime(work, sections, plugins)
    rows = []
    try:
        kernel = runtime.current
        agents = (
            botcriptofy_agent_security,
            botcriptofy_agent_configuration,
            botcriptofy_agent_finance,
            botcriptofy_agent_subscriptions,
            botcriptofy_agent_audit,
            botcriptofy_agent_ceo,
        )
        for module in agents:
            if only and module.AGENT.name not in only:
                continue
            agent = module.AGENT
            cases = load_cases(module.CASES)
            base = settings_of(kernel, agent)
            warm = await evaluate(kernel, agent, base, cases[:2])  # first call compiles the grammar
            del warm
            for provider, repeats in (("rules", rules_repeats), ("ollama", model_repeats)):
                settings = base.model_copy(update={"provider": provider})
                reports = [await evaluate(kernel, agent, settings, cases) for _ in range(repeats)]
                latencies = [ms for r in reports for ms in r.latencies_ms]
                merged = reports[0]
                for other in reports[1:]:
                    merged.cases += other.cases
                    merged.schema_valid += other.schema_valid
                    merged.correct += other.correct
                    for k, v in other.fallbacks.items():
                        merged.fallbacks[k] = merged.fallbacks.get(k, 0) + v
                merged.latencies_ms = latencies
                row = {"agent": agent.name, **merged.to_dict()}
                row["p50_ms"] = round(percentile(latencies, 50), 3)
                row["p95_ms"] = round(percentile(latencies, 95), 3)
                row["over_1500_ms"] = sum(1 for ms in latencies if ms > 1500)
                if provider == "ollama":
                    answered = server.usage[-len(latencies) :]
                    row["prompt_tokens_max"] = max((u["prompt_tokens"] for u in answered), default=0)
                    row["answer_tokens_p50"] = statistics.median([u["tokens"] for u in answered]) if answered else 0
                    row["answer_tokens_max"] = max((u["tokens"] for u in answered), default=0)
                row["load"] = load()
                rows.append(row)
                for report in reports:
                    for bad in report.invalid:
                        print(json.dumps({"agent": agent.name, **bad}), flush=True)
                print(json.dumps(row), flush=True)
    finally:
        await runtime.stop()
    return rows


async def _latencies(client: httpx.AsyncClient, count: int, offset: int, interval: float = 0.0) -> list[float]:
    """Latencies (ms) of ``count`` requests: back to back (``interval`` 0), or one every ``interval`` seconds (open loop)."""
    samples = []
    begin = time.perf_counter()
    for i in range(count):
        if interval:
            await asyncio.sleep(max(0.0, begin + i * interval - time.perf_counter()))
        started = time.perf_counter()
        response = await client.get("/bench/login-failed", params={"n": offset + i})
        samples.append((time.perf_counter() - started) * 1e3)
        assert response.status_code == 200, response.text
        await asyncio.sleep(0)  # in process nothing else would ever run: let the agent's worker take its turn
    return samples


async def bench_request_path(
    work: Path, model_url: str, requests: int, rounds: int, *, outbox: bool = False, interval: float = 0.0
) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "agent_security": {"provider": "ollama", "model": MODEL_NAME, "host": model_url, "timeout": 1.5, "shadow": True}
    }
    plugins: dict[str, Any] = {"agents": botcriptofy_agents, "agent_security": botcriptofy_agent_security}
    if outbox:  # the deployed shape: the storage plugin's outbox, its relay delivering after the commit
        plugins["storage"] = botcriptofy_storage

    def with_storage(values: dict[str, Any], name: str) -> dict[str, Any]:
        if not outbox:
            return values
        return {**values, "storage": {"url": f"sqlite+aiosqlite:///{work / name}.db", "relay_poll_interval": 0.05}}

    enabled = await _runtime(work, with_storage(settings, "enabled"), {**plugins, "emitter": Emitter()})
    off_settings = {**settings, "plugins": {"disabled": ["agent_security"]}}
    disabled = await _runtime(work, with_storage(off_settings, "disabled"), {**plugins, "emitter": Emitter()})
    disabled_again = await _runtime(work, with_storage(off_settings, "disabled-again"), {**plugins, "emitter": Emitter()})
    on: list[float] = []
    off: list[float] = []
    again: list[float] = []
    per_round = []
    try:
        runtimes = (enabled, disabled, disabled_again)
        clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=r), base_url="http://bench") for r in runtimes]
        for client in clients:
            await _latencies(client, 50, 0)
        for n in range(rounds):
            round_on = await _latencies(clients[0], requests, n * requests, interval)
            round_off = await _latencies(clients[1], requests, n * requests, interval)
            round_again = await _latencies(clients[2], requests, n * requests, interval)
            on += round_on
            off += round_off
            again += round_again
            per_round.append(
                {
                    "round": n + 1,
                    "agent_vs_none_p50": round(statistics.median(round_on) / statistics.median(round_off), 3),
                    "none_vs_none_p50": round(statistics.median(round_again) / statistics.median(round_off), 3),
                    "load": load(),
                }
            )
            print(json.dumps(per_round[-1]), flush=True)
        runner = runner_of(enabled.current, botcriptofy_agent_security.AGENT)
        assert runner is not None
        async with asyncio.timeout(120):
            await runner.idle()
        decided = runner.decided
        for client in clients:
            await client.aclose()
    finally:
        for runtime in (enabled, disabled, disabled_again):
            await runtime.stop()
    result = {
        "outbox": outbox,
        "interval_ms": interval * 1e3,
        "requests": len(on),
        "enabled_p50_ms": round(statistics.median(on), 3),
        "enabled_p95_ms": round(percentile(on, 95), 3),
        "disabled_p50_ms": round(statistics.median(off), 3),
        "disabled_p95_ms": round(percentile(off, 95), 3),
        "disabled_again_p50_ms": round(statistics.median(again), 3),
        "ratio_p50": round(statistics.median(on) / statistics.median(off), 3),
        "ratio_p95": round(percentile(on, 95) / percentile(off, 95), 3),
        "noise_ratio_p50": round(statistics.median(again) / statistics.median(off), 3),
        "noise_ratio_p95": round(percentile(again, 95) / percentile(off, 95), 3),
        "decisions_in_background": decided,
        "rounds": per_round,
        "load": load(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}), flush=True)
    return result


@contextlib.contextmanager
def model_process(threads: int | None) -> Iterator[str]:
    """Run ``tests/plugins/agents/ollama_server.py`` in a process of its own; yield its URL."""
    script = Path(__file__).resolve().parent.parent / "tests" / "plugins" / "agents" / "ollama_server.py"
    command = [sys.executable, str(script), *([] if threads is None else ["--threads", str(threads)])]
    cores = sorted(os.sched_getaffinity(0))
    # Ollama runs on hardware of its own in production: here it gets the last core, the measured process the others.
    model_cores, own_cores = ({cores[-1]}, set(cores[:-1])) if len(cores) > 1 else (set(cores), set(cores))

    def pin() -> None:
        os.sched_setaffinity(0, model_cores)

    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=pin) as process:
        os.sched_setaffinity(0, own_cores)
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            if not url.startswith("http://"):
                raise RuntimeError(f"the model server did not start (it printed {url!r})")
            yield url
        finally:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            os.sched_setaffinity(0, set(cores))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per round and kernel")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-repeats", type=int, default=1, help="passes over the shipped cases with the model")
    parser.add_argument("--rules-repeats", type=int, default=20, help="passes over the shipped cases with the rules")
    parser.add_argument("--request-path-only", action="store_true", help="skip the decision latencies")
    parser.add_argument(
        "--no-outbox", action="store_true", help="measure the request path only without the storage plugin (the handler inside publish)"
    )
    parser.add_argument(
        "--interval-ms",
        type=float,
        default=5.0,
        help="also measure the outbox shape at one request per this many ms (open loop, below saturation; 0 skips it)",
    )
    parser.add_argument("--agent", action="append", default=[], help="measure only this agent's cases (repeatable; default: every agent)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="the model's budget per decision (generous: latency is measured, not cut)"
    )
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads of the local server (default 1)")
    args = parser.parse_args()
    print(machine(), load(), flush=True)
    rows: list[dict[str, Any]] = []
    if not args.request_path_only:
        started = time.perf_counter()
        server = LocalOllama(n_threads=args.threads)
        server.start()
        print(f"model loaded and serving in {time.perf_counter() - started:.2f} s at {server.url}", flush=True)
        try:
            with tempfile.TemporaryDirectory(prefix="bcf-agents-bench-") as scratch:
                rows = await bench_decisions(
                    Path(scratch), server, args.model_repeats, args.rules_repeats, args.timeout, frozenset(args.agent)
                )
        finally:
            server.close()
    # The request path as deployed: the model server is another process (Ollama beside the service). A model
    # generating on a thread of the measured process takes the interpreter's lock between tokens, and the
    # requests then wait for it (up to the 5 ms switch interval): that would be the bench's cost, not the agent's.
    with model_process(args.threads) as model_url, tempfile.TemporaryDirectory(prefix="bcf-agents-bench-") as scratch:
        work = Path(scratch)
        paths = [await bench_request_path(work, model_url, args.requests, args.rounds)]
        if not args.no_outbox:
            paths.append(await bench_request_path(work, model_url, args.requests, args.rounds, outbox=True))
        if args.interval_ms > 0:  # one request every interval: what the emitting request itself pays, the agent's work between
            for outbox in (False, *(() if args.no_outbox else (True,))):
                paths.append(
                    await bench_request_path(work, model_url, args.requests, args.rounds, outbox=outbox, interval=args.interval_ms / 1e3)
                )
    print("\nagent                provider  cases  schema-valid  accuracy  fallbacks  p50 ms    p95 ms    > 1.5 s  load")
    for row in rows:
        print(
            f"{row['agent']:<20} {row['provider']:<8} {row['cases']:>6}  {row['schema_valid_rate']:>11.1%}  {row['accuracy']:>8.1%}"
            f"  {row['fallbacks']:>9}  {row['p50_ms']:>8.3f}  {row['p95_ms']:>8.3f}  {row['over_1500_ms']:>7}  {row['load']}"
        )
    for path in paths:
        shape = "storage plugin's outbox, relay after commit" if path["outbox"] else "no outbox, detached handler after publish"
        shape += f", one request every {path['interval_ms']:g} ms" if path["interval_ms"] else ", back to back"
        print(
            f"\nrequest path (/bench/login-failed, {shape}, {path['requests']} requests each): enabled p50 {path['enabled_p50_ms']} ms "
            f"p95 {path['enabled_p95_ms']} ms vs disabled p50 {path['disabled_p50_ms']} ms p95 {path['disabled_p95_ms']} ms "
            f"(ratio p50 {path['ratio_p50']}, p95 {path['ratio_p95']}; disabled vs disabled p50 {path['noise_ratio_p50']}, "
            f"p95 {path['noise_ratio_p95']}; {path['decisions_in_background']} decisions off the path; {path['load']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
