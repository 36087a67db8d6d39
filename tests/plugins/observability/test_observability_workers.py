"""`botcriptofy serve --workers 2`: one scrape of /metrics counts the requests of every worker of the host.

The counters survive a rolling restart (the replaced workers' counts stay) and a hot reload, and
per-worker gauges name only the live workers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from botcriptofy._manager import discover
from botcriptofy._serve import read_restart_status

BOTCRIPTOFY = str(Path(sys.executable).with_name("botcriptofy"))
ROUTE = "/-/plugins"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_settings(path: Path, state: Path, disabled: list[str], slow_request_ms: float = 1000.0) -> None:
    listed = ", ".join(f'"{name}"' for name in disabled)
    text = (
        f"[default.kernel]\nstate_dir = '{state}'\n\n[default.plugins]\ndisabled = [{listed}]\n\n"
        f"[default.observability]\nslow_request_ms = {slow_request_ms}\nmultiprocess_snapshot_seconds = 0.2\n"
    )
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def scraped(text: str) -> tuple[float, set[str], set[str]]:
    """Requests counted for ROUTE (every generation), the pids of the generation gauge, the generations seen."""
    total = 0.0
    pids: set[str] = set()
    generations: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "http_requests_total" and sample.labels.get("route") == ROUTE:
                total += sample.value
                generations.add(sample.labels["generation"])
            if sample.name == "botcriptofy_generation":
                pids.add(sample.labels["pid"])
    return total, pids, generations


async def send(client: httpx.AsyncClient, count: int) -> set[int]:
    pids: set[int] = set()
    for _ in range(count):
        response = await client.get(ROUTE, headers={"connection": "close"})
        assert response.status_code == 200
        pids.add(response.json()["pid"])
    return pids


async def expect_total(client: httpx.AsyncClient, expected: float) -> tuple[set[str], set[str]]:
    deadline = time.monotonic() + 15.0
    while True:
        total, pids, generations = scraped((await client.get("/metrics", headers={"connection": "close"})).text)
        if total == expected:
            return pids, generations
        assert total < expected, f"{total} requests counted, {expected} sent"
        assert time.monotonic() < deadline, f"{total} requests counted, {expected} sent"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_two_workers_one_scrape_counts_every_request_across_restart_and_reload(tmp_path):
    others = sorted(set(discover()) - {"observability"})
    settings_dir = tmp_path / "settings"
    settings_dir.mkdir()
    state = tmp_path / "state"
    settings_file = settings_dir / "settings.toml"
    write_settings(settings_file, state, others)
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    server = subprocess.Popen(
        [BOTCRIPTOFY, "--settings", str(settings_dir), "serve", "--port", str(port), "--workers", "2"],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
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

            sent = 0
            first_pids: set[int] = set()
            while len(first_pids) < 2:
                first_pids |= await send(client, 20)
                sent += 20
                assert sent < 400, "the second worker never answered"
            gauge_pids, _ = await expect_total(client, sent)
            assert gauge_pids == {str(pid) for pid in first_pids}
            assert (state / "metrics").is_dir()

            # A rolling restart replaces both workers: their counts stay in the scrape.
            before = int(read_restart_status(state).get("number", 0))
            os.kill(server.pid, signal.SIGHUP)
            while True:
                status = read_restart_status(state)
                if int(status.get("number", 0)) > before and status.get("state") in {"done", "failed"}:
                    break
                assert time.monotonic() < deadline + 120, "the rolling restart never finished"
                await asyncio.sleep(0.2)
            assert status["state"] == "done", status
            new_pids: set[int] = set()
            while len(new_pids) < 2:
                new_pids |= await send(client, 20)
                sent += 20
                assert sent < 800, "the second new worker never answered"
            assert not new_pids & first_pids
            gauge_pids, _ = await expect_total(client, sent)
            assert gauge_pids == {str(pid) for pid in new_pids}  # the dead workers' gauges are gone

            # A hot reload starts a new generation in each worker: the old generation's count stays.
            write_settings(settings_file, state, others, slow_request_ms=5000.0)
            reload_deadline = time.monotonic() + 20
            while True:
                generations = {(await client.get("/-/plugins", headers={"connection": "close"})).json().get("generation") for _ in range(6)}
                sent += 6
                if None not in generations and min(generations) >= 2:
                    break
                assert time.monotonic() < reload_deadline, f"the workers never reloaded: {generations}"
                await asyncio.sleep(0.2)
            await send(client, 10)
            sent += 10
            _, seen_generations = await expect_total(client, sent)
            assert len(seen_generations) >= 2
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
        print(output)  # shown by pytest when the test fails
    assert "Traceback" not in output, output
