"""`botcriptofy serve --workers 2`: every worker applies a settings change, with no failed request."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from botcriptofy._manager import discover

BOTCRIPTOFY = str(Path(sys.executable).with_name("botcriptofy"))
SERVED = """
import os
from botcriptofy import Route, hookimpl


async def answer(request):
    return {"plugin": "{name}", "pid": os.getpid()}


@hookimpl
def register_routes(kernel):
    return [Route("/p/{name}", answer)]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_settings(path: Path, state: Path, disabled: list[str]) -> None:
    listed = ", ".join(f'"{name}"' for name in disabled)
    text = f"[default.kernel]\nstate_dir = '{state}'\n\n[default.plugins]\ndisabled = [{listed}]\n"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


async def states_by_pid(client: httpx.AsyncClient, name: str, tries: int = 12) -> dict[int, bool]:
    seen: dict[int, bool] = {}
    for _ in range(tries):
        body = (await client.get("/-/plugins", headers={"connection": "close"})).json()
        enabled = {p["name"]: p["enabled"] for p in body["plugins"]}
        seen[body["pid"]] = enabled.get(name, False)
    return seen


@pytest.mark.slow
async def test_two_workers_toggle_a_plugin_with_zero_failed_requests(tmp_path, install_plugin):
    _, steady = install_plugin("steady", SERVED)
    _, toggled = install_plugin("toggled", SERVED)
    others = sorted(set(discover()) - {steady, toggled})
    settings_dir = tmp_path / "settings"
    settings_dir.mkdir()
    state = tmp_path / "state"
    settings_file = settings_dir / "settings.toml"
    write_settings(settings_file, state, others)
    port = free_port()
    server = subprocess.Popen(
        [BOTCRIPTOFY, "--settings", str(settings_dir), "serve", "--port", str(port), "--workers", "2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    limits = httpx.Limits(max_keepalive_connections=0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=5) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await client.get("/-/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, "server exited"
                assert time.monotonic() < deadline, "server did not start"
                await asyncio.sleep(0.1)
            pids: set[int] = set()
            while len(pids) < 2:
                pids |= set(await states_by_pid(client, toggled))
                assert time.monotonic() < deadline, "second worker never answered"

            failures: list[str] = []
            served = 0
            stop = asyncio.Event()

            async def load() -> None:
                nonlocal served
                while not stop.is_set():
                    for path in (f"/p/{steady}", "/-/health"):
                        try:
                            response = await client.get(path)
                            if response.status_code != 200:
                                failures.append(f"{path}: {response.status_code}")
                        except httpx.HTTPError as error:
                            failures.append(f"{path}: {error!r}")
                        served += 1

            loaders = [asyncio.create_task(load()) for _ in range(4)]
            delays = []
            for round_number in range(6):
                enable = round_number % 2 == 1
                saved = time.monotonic()
                write_settings(settings_file, state, others if enable else [*others, toggled])
                while True:
                    seen = await states_by_pid(client, toggled, tries=6)
                    if len(seen) == 2 and set(seen.values()) == {enable}:
                        break
                    assert time.monotonic() - saved < 10, f"workers never applied the change: {seen}"
                delays.append(time.monotonic() - saved)
                expected = 200 if enable else 404
                assert (await client.get(f"/p/{toggled}")).status_code == expected
            stop.set()
            await asyncio.gather(*loaders)
        assert failures == []
        assert served > 100
        assert max(delays) < 5, delays
    finally:
        server.terminate()
        output = server.communicate(timeout=15)[0].decode()
        print(output)  # shown by pytest when the test fails
    assert "Traceback" not in output, output
    assert output.count("applied configuration version") >= 12, output
