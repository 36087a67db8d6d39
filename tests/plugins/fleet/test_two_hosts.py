"""Fleet mode with two hosts on loopback: two `botcriptofy serve --workers 2` sharing one PostgreSQL database.

Each host has its own settings and state directories; ``settings.toml`` is the fleet's, ``settings.local.toml``
(state directory, host name) stays on the host.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from botcriptofy._manager import discover

BOTCRIPTOFY = str(Path(sys.executable).with_name("botcriptofy"))
STEADY = """
import os
from botcriptofy import Route, hookimpl


async def answer(request):
    return {"plugin": "{name}", "pid": os.getpid()}


@hookimpl
def register_routes(kernel):
    return [Route("/p/{name}", answer)]
"""
EXTRA = """
from botcriptofy import PluginSettings, SettingsSchema, hookimpl


class Settings(PluginSettings):
    greeting: str = "hello"


@hookimpl
def plugin_settings_schema():
    return SettingsSchema(Settings, live=frozenset({"greeting"}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shared_settings(database: str, disabled: list[str], *, title: str = "fleet", extra: str = "") -> str:
    listed = ", ".join(f'"{name}"' for name in disabled)
    return (
        f"[default.kernel]\ntitle = '{title}'\n\n[default.plugins]\ndisabled = [{listed}]\n\n"
        f"[default.storage]\nurl = '{database}'\n\n"
        "[default.fleet]\nenabled = true\nreconcile_interval = 0.5\nheartbeat_timeout = 4\n" + extra
    )


def path_plugin(directory: Path, prefix: str, source: str) -> str:
    """A plugin distribution in ``directory``: installed for the hosts that have it on their PYTHONPATH (no pip needed)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    (directory / name).mkdir(parents=True)
    (directory / name / "__init__.py").write_text(source.replace("{name}", name))
    info = directory / f"{name}-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 1.0.0\nRequires-Dist: botcriptofy>=0.2,<0.3\n"
    )
    (info / "entry_points.txt").write_text(f"[botcriptofy]\n{name} = {name}\n")
    return name


@dataclass
class Host:
    name: str
    root: Path
    python_path: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def settings_dir(self) -> Path:
        return self.root / self.name / "settings"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self, shared: str) -> None:
        self.settings_dir.mkdir(parents=True, exist_ok=True)
        (self.settings_dir / "settings.toml").write_text(shared)
        state = self.root / self.name / "state"
        (self.settings_dir / "settings.local.toml").write_text(
            f"[default.kernel]\nstate_dir = '{state}'\n\n[default.fleet]\nhost = '{self.name}'\n"
        )

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.python_path is not None:
            env["PYTHONPATH"] = self.python_path
        return env

    def start(self) -> None:
        self.process = subprocess.Popen(
            [BOTCRIPTOFY, "--settings", str(self.settings_dir), "serve", "--port", str(self.port), "--workers", "2"],
            cwd=self.root,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """Stop the whole host at once, as a crash would: no worker says goodbye."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.output.append(self.process.communicate(timeout=30)[0].decode())
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.output.append(self.process.communicate(timeout=30)[0].decode())
            self.process = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BOTCRIPTOFY, "--settings", str(self.settings_dir), *args], env=self.env(), capture_output=True, text=True, timeout=60
        )

    async def first_answer(self, client: httpx.AsyncClient, path: str) -> httpx.Response:
        """The first response the host gives at all (it answers only once a worker is ready)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return await client.get(f"{self.url}{path}", headers={"connection": "close"})
            except httpx.TransportError:
                pass
            assert self.process is not None and self.process.poll() is None, f"host {self.name} exited: {self.collect()}"
            assert time.monotonic() < deadline, f"host {self.name} did not start"
            await asyncio.sleep(0.05)

    def collect(self) -> str:
        if self.process is not None and self.process.poll() is not None:
            self.output.append(self.process.communicate()[0].decode())
        return "\n".join(self.output)


async def config_seen(client: httpx.AsyncClient, host: Host, tries: int = 8) -> set[tuple[int, str]]:
    """The (version, title) pairs the host's workers answer with (one new connection per request)."""
    seen = set()
    for _ in range(tries):
        body = (await client.get(f"{host.url}/v1/admin/config", headers={"connection": "close"})).json()
        seen.add((body["version"], body["settings"]["kernel"]["title"]))
    return seen


async def fleet(client: httpx.AsyncClient, host: Host) -> dict:
    # A new connection per poll, as config_seen: a kept-alive one the server closes as idle at the moment the
    # next poll goes out is a ReadError of the client's, not the service's (seen once under a loaded suite).
    response = await client.get(f"{host.url}/v1/admin/fleet", headers={"connection": "close"})
    assert response.status_code == 200, response.text
    return response.json()


async def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def workers_on(status: dict, version: int) -> dict[str, int]:
    return {host["host"]: sum(1 for w in host["workers"] if w["config_version"] == version) for host in status["hosts"]}


@dataclass
class Fleet:
    a: Host
    b: Host
    database: str
    others: list[str]
    extra: str  # installed on host A only
    steady: str
    toggled: str


@pytest.fixture
async def two_hosts(tmp_path: Path, postgres_url: str, install_plugin) -> AsyncIterator[Fleet]:
    # install_plugin is held (not called) so that no other test changes the installed plugins meanwhile;
    # the test plugins are distributions on the hosts' PYTHONPATH: both hosts have steady and toggled, A has extra.
    everywhere, only_a = tmp_path / "plugins-everywhere", tmp_path / "plugins-only-on-a"
    steady = path_plugin(everywhere, "steady", STEADY)
    toggled = path_plugin(everywhere, "toggled", STEADY)
    extra = path_plugin(only_a, "fleetextra", EXTRA)
    # storage.url names the shared database; the storage plugin itself is not needed to share the configuration.
    others = sorted(set(discover()) - {"fleet"})
    a = Host("host-a", tmp_path, python_path=f"{everywhere}{os.pathsep}{only_a}")
    b = Host("host-b", tmp_path, python_path=str(everywhere))
    shared = shared_settings(postgres_url, others)
    a.prepare(shared)
    b.prepare(shared)
    a.start()
    b.start()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await a.first_answer(client, "/-/health")
            await b.first_answer(client, "/-/health")
        yield Fleet(a, b, postgres_url, others, extra, steady, toggled)
    finally:
        a.stop()
        b.stop()
        print(a.collect(), b.collect())  # shown when the test fails
    for host in (a, b):
        assert "Traceback" not in host.collect(), host.collect()


@pytest.mark.timeout(300)
async def test_api_change_cli_rollback_drift_and_catch_up(two_hosts: Fleet) -> None:
    a, b, database, others = two_hosts.a, two_hosts.b, two_hosts.database, two_hosts.others
    async with httpx.AsyncClient(timeout=10) as client:
        start = await wait_for(lambda: _all_on_one_version(client, a), what="both hosts and 4 workers on the first version")
        assert {host["host"] for host in start["hosts"]} == {"host-a", "host-b"}

        # A change through the API on host A is live on every worker of host B within a second.
        accepted = time.monotonic()
        response = await client.post(
            f"{a.url}/v1/admin/config/apply", json={"files": {"settings.toml": shared_settings(database, others, title="two")}}
        )
        assert response.status_code == 200, response.text
        version = response.json()["version"]
        assert version == start["current_version"] + 1
        await wait_for(lambda: _sees(client, b, {(version, "two")}), what="host B serving the API change")
        live_on_b = time.monotonic() - accepted
        status = await wait_for(lambda: _all_on(client, a, version), what="every worker reporting the change")
        created = datetime.fromisoformat((await client.get(f"{a.url}/v1/admin/config/history")).json()[0]["applied_at"]).timestamp()
        lags = [w["applied_at"] - created for host in status["hosts"] for w in host["workers"]]
        assert max(lags) < 1.0, (lags, live_on_b)
        history = (await client.get(f"{b.url}/v1/admin/config/history")).json()
        assert history[0]["version"] == version and history[0]["source"] == "api" and history[0]["actor"].startswith("loopback:")
        assert history[0]["diff"] == {"settings.toml.default.kernel.title": {"from": "fleet", "to": "two"}}
        assert "two" in (b.settings_dir / "settings.toml").read_text()  # B's copy follows the fleet

        # A rollback through the CLI on host B reaches host A.
        done = b.cli("config", "rollback", str(version - 1))
        assert done.returncode == 0, done.stderr
        assert f"configuration version {version + 1} is the fleet's" in done.stdout
        await wait_for(lambda: _sees(client, a, {(version + 1, "fleet")}), what="host A serving the CLI rollback")
        await wait_for(lambda: _all_on(client, b, version + 1), what="every worker on the rollback")
        history = (await client.get(f"{a.url}/v1/admin/config/history")).json()
        assert history[0]["source"] == "cli" and history[0]["note"] == f"rollback to version {version - 1}"
        assert history[0]["actor"].startswith("operator:")

        # A refused candidate is refused once, with the reason, and changes nothing.
        response = await client.post(
            f"{b.url}/v1/admin/config/apply",
            json={"files": {"settings.toml": shared_settings(database, others, extra="reconcile_every = 1\n")}},
        )
        assert response.status_code == 422 and "fleet.reconcile_every" in response.text, response.text
        response = await client.post(f"{b.url}/v1/admin/config/apply", json={"files": {"settings.local.toml": "[default.kernel]\n"}})
        assert response.status_code == 422 and "settings.local.toml is this host's own file" in response.text, response.text
        assert (await fleet(client, a))["current_version"] == version + 1

        # A file edited on host A only is reported as drift (/-/ready notes, fleet status), not applied.
        (a.settings_dir / "settings.toml").write_text(shared_settings(database, others, title="drifted"))

        async def drift_reported() -> dict | None:
            ready = (await client.get(f"{a.url}/-/ready", headers={"connection": "close"})).json()
            return ready if ready["status"] == "ok" and "config.drift" in ready["notes"] else None

        # Each worker notices the edit on its own: read the notes of the answer that reported it (another
        # worker of host A may still be a moment behind under a loaded machine).
        ready = await wait_for(drift_reported, what="drift in /-/ready")
        assert "settings.toml differ from the fleet's version" in ready["notes"]["config.drift"]
        assert "they validate" in ready["notes"]["config.drift"]
        await asyncio.sleep(0.6)  # a reconcile later: still not applied
        assert await config_seen(client, a) == {(version + 1, "fleet")}
        assert await config_seen(client, b) == {(version + 1, "fleet")}
        status = await wait_for(lambda: _drift_in_status(client, b), what="drift in the fleet status")
        assert [host["host"] for host in status["hosts"] if host["drift"]] == ["host-a"]
        assert "drifted" in (a.settings_dir / "settings.toml").read_text()  # the operator's edit is kept

        # Publishing the edit through the CLI on host A makes it the fleet's version: the drift is gone.
        published = a.cli("config", "apply", str(a.settings_dir / "settings.toml"))
        assert published.returncode == 0, published.stdout + published.stderr
        assert f"configuration version {version + 2} is the fleet's" in published.stdout
        await wait_for(lambda: _sees(client, b, {(version + 2, "drifted")}), what="host B serving A's published edit")
        await wait_for(lambda: _no_drift(client, a), what="the drift report cleared")

        # `botcriptofy fleet status` lists both hosts and their workers.
        listed = b.cli("fleet", "status")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert "host host-a" in listed.stdout and "host host-b" in listed.stdout and "worker" in listed.stdout

        # Host B down during a change catches up on start, before it answers at all.
        b.stop()
        response = await client.post(
            f"{a.url}/v1/admin/config/apply", json={"files": {"settings.toml": shared_settings(database, others, title="while-b-was-down")}}
        )
        assert response.status_code == 200, response.text
        latest = response.json()["version"]
        b.start()
        first = await b.first_answer(client, "/v1/admin/config")
        assert (first.json()["version"], first.json()["settings"]["kernel"]["title"]) == (latest, "while-b-was-down")
        assert await config_seen(client, b) == {(latest, "while-b-was-down")}
        assert "while-b-was-down" in (b.settings_dir / "settings.toml").read_text()


async def _all_on_one_version(client: httpx.AsyncClient, host: Host) -> dict | None:
    status = await fleet(client, host)
    versions = {w["config_version"] for h in status["hosts"] for w in h["workers"]}
    workers = sum(len(h["workers"]) for h in status["hosts"])
    return status if workers == 4 and versions == {status["current_version"]} else None


async def _all_on(client: httpx.AsyncClient, host: Host, version: int) -> dict | None:
    status = await fleet(client, host)
    return status if status["current_version"] == version and workers_on(status, version) == {"host-a": 2, "host-b": 2} else None


async def _sees(client: httpx.AsyncClient, host: Host, expected: set[tuple[int, str]]) -> bool:
    return await config_seen(client, host, tries=6) == expected


async def _drift_in_status(client: httpx.AsyncClient, host: Host) -> dict | None:
    status = await fleet(client, host)
    return status if any(h["drift"] for h in status["hosts"]) else None


@pytest.mark.timeout(300)
async def test_refusal_on_one_host_toggling_under_load_and_heartbeat_timeout(two_hosts: Fleet) -> None:
    a, b, database, others = two_hosts.a, two_hosts.b, two_hosts.database, two_hosts.others
    toggled = two_hosts.toggled
    async with httpx.AsyncClient(timeout=10) as client:
        start = await wait_for(lambda: _all_on_one_version(client, a), what="both hosts on the first version")
        before = start["current_version"]

        # A version that needs a plugin host B lacks: A applies it, B refuses it and keeps serving its version.
        needs = shared_settings(database, others, extra=f"\n[default.{two_hosts.extra}]\ngreeting = 'hi'\n")
        response = await client.post(f"{a.url}/v1/admin/config/apply", json={"files": {"settings.toml": needs}})
        assert response.status_code == 200, response.text
        refused = response.json()["version"]

        async def b_refused() -> dict | None:
            status = await fleet(client, a)
            hosts = {host["host"]: host for host in status["hosts"]}
            b_host = hosts.get("host-b")
            ok = b_host is not None and all(str(refused) in w["refused_versions"] for w in b_host["workers"])
            return status if ok and hosts["host-a"]["config_versions"] == [refused] else None

        status = await wait_for(b_refused, what="host B refusing the version")
        b_host = next(host for host in status["hosts"] if host["host"] == "host-b")
        assert b_host["config_versions"] == [before] and not b_host["in_sync"]
        assert f"unknown plugin '{two_hosts.extra}'" in b_host["refused_versions"][str(refused)]
        assert await config_seen(client, b) == {(before, "fleet")}
        ready = (await client.get(f"{b.url}/-/ready")).json()
        assert ready["status"] == "ok" and f"config.refused.{refused}" in ready["notes"]
        assert two_hosts.extra not in (b.settings_dir / "settings.toml").read_text()  # B's files stay on the version it runs
        listed = a.cli("fleet", "status")
        assert listed.returncode == 1, listed.stdout + listed.stderr
        assert "host host-b: version" in listed.stdout and "NOT in sync" in listed.stdout and f"refused version {refused}" in listed.stdout
        assert '"refused_versions"' in a.cli("fleet", "status", "--json").stdout

        # Toggling a plugin through both hosts under load on both hosts: zero failed requests.
        failures: list[str] = []
        served = 0
        stop = asyncio.Event()
        limits = httpx.Limits(max_keepalive_connections=0)

        async def load(host: Host) -> None:
            nonlocal served
            async with httpx.AsyncClient(base_url=host.url, limits=limits, timeout=10) as loader:
                while not stop.is_set():
                    for path in (f"/p/{two_hosts.steady}", "/-/health"):
                        try:
                            answer = await loader.get(path)
                            if answer.status_code != 200:
                                failures.append(f"{host.name} {path}: {answer.status_code}")
                        except httpx.HTTPError as error:
                            failures.append(f"{host.name} {path}: {error!r}")
                        served += 1

        loaders = [asyncio.create_task(load(host)) for host in (a, b, a, b)]
        try:
            for round_number in range(6):
                disabled = others if round_number % 2 else [*others, toggled]
                via = a if round_number % 2 else b
                files = {"settings.toml": shared_settings(database, disabled, title=f"round-{round_number}")}
                response = await client.post(f"{via.url}/v1/admin/config/apply", json={"files": files})
                assert response.status_code == 200, response.text
                version = response.json()["version"]
                await wait_for(lambda v=version: _all_on(client, a, v), what=f"round {round_number} on every worker")
                expected = 200 if round_number % 2 else 404
                for host in (a, b):
                    assert (await client.get(f"{host.url}/p/{toggled}", headers={"connection": "close"})).status_code == expected
        finally:
            stop.set()
            await asyncio.gather(*loaders)
        assert failures == []
        assert served > 100
        status = await fleet(client, b)
        assert all(not host["refused_versions"] for host in status["hosts"])  # B applied the later versions

        # A host that stops sending heartbeats drops out after the timeout (4 s here).
        b.kill()
        status = await fleet(client, a)
        assert "host-b" in {host["host"] for host in status["hosts"]}

        async def b_gone() -> bool:
            return "host-b" not in {host["host"] for host in (await fleet(client, a))["hosts"]}

        await wait_for(b_gone, timeout=15, what="host B dropping out")


async def _no_drift(client: httpx.AsyncClient, host: Host) -> bool:
    ready = (await client.get(f"{host.url}/-/ready", headers={"connection": "close"})).json()
    return "config.drift" not in ready.get("notes", {})
