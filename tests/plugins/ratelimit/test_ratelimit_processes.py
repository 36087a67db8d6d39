"""Two uvicorn server processes sharing Redis admit exactly the configured number at a boundary."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from botcriptofy.testing import render_settings

HERE = Path(__file__).parent


async def wait_for_health(client: httpx.AsyncClient, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, server.communicate()[0].decode()
        try:
            if (await client.get("/-/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_two_server_processes_share_one_limit_exactly(tmp_path, redis_url, redis_prefix, unused_port):
    settings_dir = tmp_path / "settings"
    settings_dir.mkdir()
    section = {
        "backend": "redis",
        "redis_url": redis_url,
        "key_prefix": redis_prefix,
        "exempt_paths": ["/-/health"],
        "anonymous": {"rate_per_minute": 1, "burst": 40},
        "plans": {
            "pro": {"rate_per_minute": 1, "burst": 25, "calls_per_month": 0},
            "internal": {"rate_per_minute": 6000, "burst": 1000, "calls_per_month": 30},
        },
    }
    (settings_dir / "settings.toml").write_text(render_settings({"ratelimit": section}, state_dir=tmp_path / "state"))
    environment = {**os.environ, "RATELIMIT_TEST_SETTINGS": str(settings_dir)}
    ports = [unused_port(), unused_port()]
    servers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(HERE),
                "--factory",
                "ratelimit_server_app:make_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for port in ports
    ]
    limits = httpx.Limits(max_connections=200)
    clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=10) for port in ports]
    try:
        for client, server in zip(clients, servers, strict=True):
            await wait_for_health(client, server)

        async def fire(headers: dict[str, str]) -> tuple[Counter[int], set[int]]:
            responses = await asyncio.gather(*(clients[i % 2].get("/v1/pid", headers=headers) for i in range(100)))
            pids = {r.json()["pid"] for r in responses if r.status_code == 200}
            return Counter(r.status_code for r in responses), pids

        anonymous, pids = await fire({})
        assert anonymous == {200: 40, 429: 60}
        assert pids == {server.pid for server in servers}  # both processes admitted some: one shared limit
        assert (await fire({"x-tenant": "t1", "x-plan": "pro"}))[0] == {200: 25, 429: 75}
        assert (await fire({"x-tenant": "t2", "x-plan": "internal"}))[0] == {200: 30, 429: 70}  # the monthly quota
    finally:
        for client in clients:
            await client.aclose()
        outputs = []
        for server in servers:
            server.terminate()
            outputs.append(server.communicate(timeout=15)[0].decode())
    for output in outputs:
        assert "Traceback" not in output, output
