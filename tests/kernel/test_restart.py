"""`botcriptofy serve` under gunicorn: rolling restarts with zero failed requests, restart pending, trusted proxies."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from botcriptofy._manager import discover
from botcriptofy._runtime import read_workers

BOTCRIPTOFY = str(Path(sys.executable).with_name("botcriptofy"))
ANSWER = """
import os
from botcriptofy import Route, hookimpl

VERSION = "{version}"


async def answer(request):
    return {"version": VERSION, "pid": os.getpid(), "client": request.client.host, "scheme": request.url.scheme}


@hookimpl
def register_routes(kernel):
    return [Route("/p/{name}", answer)]
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_settings(directory: Path, state: Path, disabled: list[str], extra: str = "") -> None:
    listed = ", ".join(f'"{name}"' for name in disabled)
    text = f"[default.kernel]\nstate_dir = '{state}'\n{extra}\n[default.plugins]\ndisabled = [{listed}]\n"
    (directory / "settings.toml").write_text(text)


def bump(root: Path, old: str, new: str) -> None:
    """Install a new version of a test plugin over the running one (new code on disk, same distribution)."""
    for path in [root / "pyproject.toml", *root.glob("src/*/__init__.py")]:
        text = path.read_text()
        path.write_text(text.replace(f'version = "{old}"', f'version = "{new}"').replace(f'VERSION = "{old}"', f'VERSION = "{new}"'))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            str(root),
        ],
        check=True,
        capture_output=True,
    )


class Server:
    def __init__(self, tmp_path: Path, settings_dir: Path, state: Path, workers: int) -> None:
        self.port = free_port()
        self.state = state
        self.log = open(tmp_path / f"server-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        # The options after the command work like before it (`serve --settings DIR`).
        self.process = subprocess.Popen(
            [
                BOTCRIPTOFY,
                "serve",
                "--settings",
                str(settings_dir),
                "--env",
                "testing",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            cwd=tmp_path,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.workers = workers
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.output()
                described = [w for w in read_workers(self.state) if w.get("ready")]
                with contextlib.suppress(httpx.TransportError):
                    if len(described) >= self.workers and (await client.get("/-/health")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        pytest.fail(f"server not ready within {within} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


async def run_cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(BOTCRIPTOFY, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_restart_replaces_two_workers_one_at_a_time_with_zero_failed_requests(tmp_path, install_plugin):
    dist, name = install_plugin("upgraded", ANSWER.replace("{version}", "1.0.0"), version="1.0.0")
    root = tmp_path / dist
    settings_dir = tmp_path / "settings"
    settings_dir.mkdir()
    state = tmp_path / "state"
    write_settings(settings_dir, state, sorted(set(discover()) - {name}))
    server = Server(tmp_path, settings_dir, state, workers=2)
    stop = asyncio.Event()
    failures: list[str] = []
    answers: Counter[tuple[str, int]] = Counter()

    async def load() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = await client.get(f"/p/{name}")
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                    else:
                        body = response.json()
                        answers[(body["version"], body["pid"])] += 1
                except httpx.HTTPError as error:
                    failures.append(repr(error))

    try:
        await server.ready()
        old_pids = {int(w["pid"]) for w in read_workers(state)}
        assert len(old_pids) == 2
        loaders = [asyncio.create_task(load()) for _ in range(4)]
        await asyncio.sleep(0.5)

        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            listed = {p["name"]: p for p in (await client.get("/-/plugins")).json()["plugins"]}
            assert listed[name]["version"] == "1.0.0" and listed[name]["restart_pending"] is False

            bump(root, "1.0.0", "1.1.0")
            for _ in range(4):  # every worker says so
                listed = {p["name"]: p for p in (await client.get("/-/plugins", headers={"connection": "close"})).json()["plugins"]}
                assert listed[name]["version"] == "1.0.0"
                assert listed[name]["installed_version"] == "1.1.0"
                assert listed[name]["restart_pending"] is True
            code, out = await run_cli("plugins", "list", "--settings", str(settings_dir))
            assert code == 0 and "restart pending" in next(line for line in out.splitlines() if line.startswith(name))

            started = time.monotonic()
            code, out = await run_cli("restart", "--settings", str(settings_dir), "--timeout", "150")
            assert code == 0, out + server.output()
            assert "2 worker(s) replaced" in out
            took = time.monotonic() - started

            new_pids = {int(w["pid"]) for w in read_workers(state)}
            assert len(new_pids) == 2 and not new_pids & old_pids
            await asyncio.sleep(0.5)
            for _ in range(4):
                listed = {p["name"]: p for p in (await client.get("/-/plugins", headers={"connection": "close"})).json()["plugins"]}
                assert listed[name]["version"] == "1.1.0" and listed[name]["restart_pending"] is False
            code, out = await run_cli("plugins", "list", "--settings", str(settings_dir))
            assert "restart pending" not in out
        stop.set()
        await asyncio.gather(*loaders)
    finally:
        stop.set()
        server.stop()
    assert failures == [], failures[:5]
    by_version = Counter()
    for (version, _), count in answers.items():
        by_version[version] += count
    assert by_version["1.0.0"] > 0 and by_version["1.1.0"] > 0
    print(f"rolling restart of 2 workers took {took:.1f} s; {sum(answers.values())} requests, 0 failed; by version {dict(by_version)}")


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_proxy_headers_are_honoured_only_from_trusted_proxies_and_never_open_the_admin_routes(tmp_path, install_plugin):
    _, name = install_plugin("echo", ANSWER.replace("{version}", "1.0.0"))
    others = sorted(set(discover()) - {name})
    servers = []
    for label, extra in (("direct", ""), ("proxied", "trusted_proxies = ['127.0.0.1']\n")):
        settings_dir = tmp_path / f"settings-{label}"
        settings_dir.mkdir()
        state = tmp_path / f"state-{label}"
        write_settings(settings_dir, state, others, extra)
        servers.append(Server(tmp_path, settings_dir, state, workers=1))
    direct, proxied = servers
    forwarded = {"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https"}
    try:
        await asyncio.gather(direct.ready(), proxied.ready())
        async with httpx.AsyncClient(base_url=direct.url, timeout=5) as client:
            # No trusted proxy: the headers are ignored, the peer is the client.
            body = (await client.get(f"/p/{name}", headers=forwarded)).json()
            assert body["client"] == "127.0.0.1" and body["scheme"] == "http"
            assert (await client.get("/v1/admin/config")).status_code == 200  # loopback, no identity plugin
            refused = await client.get("/v1/admin/config", headers={"x-forwarded-for": "127.0.0.1"})
            assert refused.status_code == 403  # a proxy may be standing in for a remote client
            assert (await client.get("/v1/admin/config", headers={"forwarded": "for=127.0.0.1"})).status_code == 403
        async with httpx.AsyncClient(base_url=proxied.url, timeout=5) as client:
            body = (await client.get(f"/p/{name}", headers=forwarded)).json()
            assert body["client"] == "203.0.113.9" and body["scheme"] == "https"
            # Behind a trusted proxy, a loopback peer proves nothing: the admin routes are closed without identity.
            assert (await client.get("/v1/admin/config")).status_code == 403
            assert (await client.get("/v1/admin/config", headers={"x-forwarded-for": "127.0.0.1"})).status_code == 403
    finally:
        for server in servers:
            server.stop()
    assert not (tmp_path / "state-direct" / "botcriptofy.pid").exists()
