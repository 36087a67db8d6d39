"""The service as operators run it (`botcriptofy serve`), with the embedded engine: two workers fire a
schedule once per tick, a process killed mid-activity, a plugin toggled live under load, and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from botcriptofy._manager import discover
from botcriptofy.testing import wait_until

from .conftest import FAST

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

BOTCRIPTOFY = str(Path(sys.executable).with_name("botcriptofy"))
PROBE = """
import asyncio, json, os
from pathlib import Path
from botcriptofy import Activity, Route, Schedule, Workflow, hookimpl, kernel_of

LOG = os.environ.get("BCF_PROBE_LOG")


def record(kind, **data):
    if LOG:
        with open(LOG, "a") as handle:
            handle.write(json.dumps({"kind": kind, "pid": os.getpid(), **data}) + "\\n")


def attempts():
    if not LOG or not Path(LOG).exists():
        return 0
    return sum(1 for line in Path(LOG).read_text().splitlines() if json.loads(line)["kind"] == "slow")


async def tick(run):
    record("tick", scheduled_at=run.scheduled_at.isoformat() if run.scheduled_at else None)


async def slow(input):
    attempt = attempts() + 1
    record("slow", attempt=attempt)
    if attempt == 1:
        await asyncio.sleep(3600)  # the first try hangs until its process is killed
    return {"attempt": attempt, "pid": os.getpid()}


async def flow(context, input):
    return await context.activity("{name}.slow", {})


@hookimpl
def register_schedules(kernel):
    return [Schedule("tick", tick, interval=1)] if LOG and os.environ.get("BCF_PROBE_TICK") else []


# Other tests' services discover this distribution while it is installed: it contributes nothing
# unless it runs in a service of these tests (which set BCF_PROBE_LOG).


@hookimpl
def register_workflows(kernel):
    return [Workflow("{name}.flow", flow), Activity("{name}.slow", slow, timeout=4)] if LOG else []


async def start(request):
    run = await kernel_of(request).workflows().start("{name}.flow", id=request.path_params["id"])
    return {"id": run.id}


async def status(request):
    run = await kernel_of(request).workflows().describe(request.path_params["id"])
    return {"status": run.status if run else None}


async def ok(request):
    return {"ok": True, "pid": os.getpid()}


@hookimpl
def register_routes(kernel):
    if not LOG:
        return []
    return [Route("/probe/start/{id}", start, methods=["POST"]), Route("/probe/status/{id}", status), Route("/probe/ok", ok)]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_settings(directory: Path, state: Path, disabled: list[str]) -> None:
    listed = ", ".join(f'"{name}"' for name in disabled)
    fast = "\n".join(f"{key} = {value}" for key, value in FAST.items())
    text = f"[default.kernel]\nstate_dir = '{state}'\n\n[default.plugins]\ndisabled = [{listed}]\n\n[default.workflows]\n{fast}\n"
    temporary = directory / "settings.toml.tmp"
    temporary.write_text(text)
    os.replace(temporary, directory / "settings.toml")


class Service:
    def __init__(self, tmp_path: Path, probe: str, *, workers: int = 1, tick: bool = False) -> None:
        self.settings = tmp_path / "settings"
        self.settings.mkdir(exist_ok=True)
        self.state = tmp_path / "state"
        self.log = tmp_path / "probe.log"
        self.probe = probe
        self.others = sorted(set(discover()) - {probe, "workflows"})
        write_settings(self.settings, self.state, self.others)
        self.port = free_port()
        self.workers = workers
        self.env = {**os.environ, "BCF_PROBE_LOG": str(self.log), **({"BCF_PROBE_TICK": "1"} if tick else {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.output = open(tmp_path / "service.log", "ab")  # noqa: SIM115 - closed by stop()
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [BOTCRIPTOFY, "--settings", str(self.settings), "serve", "--port", str(self.port), "--workers", str(self.workers)],
            cwd=self.settings.parent,
            env=self.env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def ready(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.base, timeout=5) as client:
            while True:
                try:
                    if (await client.get("/-/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert self.process is not None and self.process.poll() is None, "the service exited"
                assert time.monotonic() < deadline, "the service did not become ready"
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the whole service (its workers and, through them, the embedded server)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        self._stop()
        self.output.close()

    def _stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def log_text(self) -> str:
        self.output.flush()
        return (self.settings.parent / "service.log").read_text(errors="replace")

    def records(self, kind: str) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [item for line in self.log.read_text().splitlines() if (item := json.loads(line))["kind"] == kind]

    async def temporal(self) -> Client:
        return await Client.connect((self.state / "temporal" / "endpoint").read_text().strip())


async def test_two_workers_fire_a_one_second_schedule_once_per_tick(tmp_path, install_plugin):
    _, probe = install_plugin("wfprobe", PROBE)
    service = Service(tmp_path, probe, workers=2, tick=True)
    service.start()
    try:
        await service.ready()
        await wait_until(lambda: service.log_text().count("Application startup complete") == 2, timeout=60)
        await wait_until(lambda: len(service.records("tick")) >= 4, timeout=60)
        ticks = Counter(item["scheduled_at"] for item in service.records("tick"))
        assert all(at is not None for at in ticks)
        assert max(ticks.values()) == 1, ticks  # never twice for one tick, with two workers polling
        assert "embedded Temporal server ready" in service.log_text()  # one worker owns the server, the other follows
    finally:
        service.stop()


async def test_a_service_killed_mid_activity_completes_the_workflow_after_restart(tmp_path, install_plugin):
    _, probe = install_plugin("wfprobe", PROBE)
    service = Service(tmp_path, probe)
    service.start()
    try:
        await service.ready()
        async with httpx.AsyncClient(base_url=service.base, timeout=5) as client:
            assert (await client.post("/probe/start/job-1")).status_code == 200
        await wait_until(lambda: service.records("slow"), timeout=30)
        first = service.records("slow")[0]
        service.kill()
        service.start()
        await service.ready()
        async with httpx.AsyncClient(base_url=service.base, timeout=5) as client:

            async def completed() -> bool:
                return bool((await client.get("/probe/status/job-1")).json()["status"] == "completed")

            await wait_until(completed, timeout=60)
        attempts = service.records("slow")
        assert [item["attempt"] for item in attempts] == [1, 2]
        assert attempts[1]["pid"] != first["pid"]  # finished by the restarted service
        result = await (await service.temporal()).get_workflow_handle("job-1").result()
        assert result == {"attempt": 2, "pid": attempts[1]["pid"]}
    finally:
        service.stop()


async def test_a_plugin_owning_a_schedule_toggled_under_load_pauses_and_resumes_with_no_failed_request(tmp_path, install_plugin):
    _, probe = install_plugin("wfprobe", PROBE)
    service = Service(tmp_path, probe, tick=True)
    service.start()
    failures: list[str] = []
    served = 0
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal served
        async with httpx.AsyncClient(base_url=service.base, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = await client.get("/-/health")
                    if response.status_code != 200:
                        failures.append(f"{response.status_code}")
                    served += 1
                except httpx.HTTPError as error:
                    failures.append(repr(error))

    try:
        await service.ready()
        temporal = await service.temporal()
        schedule = temporal.get_schedule_handle(f"{probe}.tick")

        async def paused() -> bool:
            return bool((await schedule.describe()).schedule.state.paused)

        await wait_until(lambda: service.records("tick"), timeout=30)
        loaders = [asyncio.create_task(load()) for _ in range(8)]
        for _ in range(2):
            write_settings(service.settings, service.state, [*service.others, probe])
            await wait_until(paused, timeout=15)
            fired = len(service.records("tick"))
            await asyncio.sleep(2.5)
            assert len(service.records("tick")) <= fired + 1  # at most one already under way
            write_settings(service.settings, service.state, service.others)

            async def resumed() -> bool:
                return not await paused()

            await wait_until(resumed, timeout=15)
            fired = len(service.records("tick"))
            await wait_until(lambda fired=fired: len(service.records("tick")) >= fired + 2, timeout=20)
        stop.set()
        await asyncio.gather(*loaders)
        assert failures == [] and served > 100, (failures[:5], served)
    finally:
        stop.set()
        service.stop()


@pytest.mark.timeout(300)
def test_the_command_line_lists_and_pauses_schedules(tmp_path, install_plugin):
    _, probe = install_plugin("wfprobe", PROBE)
    service = Service(tmp_path, probe, tick=True)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BOTCRIPTOFY, "--settings", str(service.settings), *args], env=service.env, capture_output=True, text=True, timeout=90
        )

    try:
        listed = run("schedules", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        [tick] = [item for item in json.loads(listed.stdout) if item["id"] == f"{probe}.tick"]
        assert tick["interval_seconds"] == [1.0]
        paused = run("schedules", "pause", f"{probe}.tick")
        assert paused.returncode == 0 and json.loads(paused.stdout)["paused"] is True
        # Without the workflows plugin, the plugin list says the schedules do not run.
        write_settings(service.settings, service.state, [*service.others, "workflows"])
        plugins = run("plugins", "list")
        assert plugins.returncode == 0
        assert f"schedules of {probe} are not running: no workflows plugin is enabled" in plugins.stderr
    finally:
        service.stop()
