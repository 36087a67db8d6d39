"""Fleet mode: the time from a configuration change being sent to it being live on every worker of two hosts.

1. Baseline, single-host mode: one ``botcriptofy serve --workers 2`` (fleet off); ``--changes`` (50) times,
   ``POST /v1/admin/config/apply`` with a new ``kernel.title``; live = the moment the last worker wrote its
   worker file (``<state_dir>/workers/<pid>.json``, rewritten right after a worker swaps generations) with
   the new version.
2. Fleet mode: two hosts (separate settings and state directories, ``--workers 2`` each) sharing one fresh
   PostgreSQL database; the same changes, sent alternately to host A and host B; live = the moment the last
   of the four workers wrote its worker file with the new fleet version (NOTIFY, then reconcile as a fallback).

Reported: p50/p95/max of both, and the fleet/single-host ratio of the p50. Target: max < 1 s.
Usage: ``python bench/fleet_bench.py [--changes 50]`` (PostgreSQL from ``BCF_TEST_POSTGRES``, default the local server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BOTCRIPTOFY, free_port, machine

ADMIN = os.environ.get("BCF_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def installed_plugins() -> list[str]:
    from botcriptofy._manager import discover

    return sorted(discover())


def shared(title: str, disabled: list[str], database: str | None) -> str:
    listed = ", ".join(f'"{name}"' for name in disabled)
    text = f"[default.kernel]\ntitle = '{title}'\n\n[default.plugins]\ndisabled = [{listed}]\n"
    if database:
        text += f"\n[default.storage]\nurl = '{database}'\n\n[default.fleet]\nenabled = true\nreconcile_interval = 1.0\n"
    return text


class Host:
    def __init__(self, root: Path, name: str, settings: str) -> None:
        self.name = name
        self.settings_dir = root / name / "settings"
        self.state_dir = root / name / "state"
        self.settings_dir.mkdir(parents=True)
        (self.settings_dir / "settings.toml").write_text(settings)
        local = f"[default.kernel]\nstate_dir = '{self.state_dir}'\n\n[default.fleet]\nhost = '{name}'\n"
        (self.settings_dir / "settings.local.toml").write_text(local)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [BOTCRIPTOFY, "--settings", str(self.settings_dir), "serve", "--port", str(self.port), "--workers", "2"],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def workers(self) -> dict[int, tuple[int | None, float]]:
        """pid -> (config version, time the worker file was written)."""
        found = {}
        for path in (self.state_dir / "workers").glob("*.json"):
            try:
                stat = path.stat()
                body = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            found[int(body["pid"])] = (body.get("config_version"), stat.st_mtime)
        return found

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def started(client: httpx.AsyncClient, hosts: list[Host]) -> None:
    deadline = time.monotonic() + 120
    for host in hosts:
        while True:
            try:
                if (await client.get(f"{host.url}/-/ready")).status_code == 200 and len(host.workers()) == 2:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{host.name} did not start")
            await asyncio.sleep(0.1)


async def measure(hosts: list[Host], disabled: list[str], database: str | None, changes: int) -> list[float]:
    delays = []
    async with httpx.AsyncClient(timeout=10) as client:
        await started(client, hosts)
        await asyncio.sleep(1.0)  # let every worker settle on the first version
        for number in range(changes):
            via = hosts[number % len(hosts)]
            files = {"settings.toml": shared(f"change-{number}-{uuid.uuid4().hex[:6]}", disabled, database)}
            sent = time.time()
            response = await client.post(f"{via.url}/v1/admin/config/apply", json={"files": files})
            if response.status_code != 200:
                raise SystemExit(f"change {number} refused: {response.text}")
            version = response.json()["version"]
            deadline = time.monotonic() + 10
            while True:
                workers = [w for host in hosts for w in host.workers().values()]
                if len(workers) == 2 * len(hosts) and all(v == version for v, _ in workers):
                    delays.append(max(written for _, written in workers) - sent)
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"change {number} (version {version}) not live everywhere: {workers}")
                await asyncio.sleep(0.005)
    return delays


def summary(delays: list[float]) -> dict[str, float]:
    ordered = sorted(delays)
    return {
        "p50": statistics.median(ordered),
        "p95": ordered[max(0, round(0.95 * len(ordered)) - 1)],
        "max": ordered[-1],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50)
    args = parser.parse_args()
    disabled = [name for name in installed_plugins() if name not in ("fleet",)]
    print(machine())
    name = f"bcf_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    database = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        with tempfile.TemporaryDirectory(prefix="bcf-fleet-bench-") as scratch:
            root = Path(scratch)
            single = Host(root, "single", shared("first", disabled, None))
            try:
                baseline = await measure([single], disabled, None, args.changes)
            finally:
                single.stop()
            hosts = [Host(root, "host-a", shared("first", disabled, database)), Host(root, "host-b", shared("first", disabled, database))]
            try:
                fleet = await measure(hosts, disabled, database, args.changes)
            finally:
                for host in hosts:
                    host.stop()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    base, measured = summary(baseline), summary(fleet)
    print(f"{args.changes} changes, sent -> live on every worker (ms)")
    print(
        f"  single host, 2 workers (baseline): p50 {base['p50'] * 1000:7.1f}  p95 {base['p95'] * 1000:7.1f}  max {base['max'] * 1000:7.1f}"
    )
    print(
        f"  fleet, 2 hosts x 2 workers:        p50 {measured['p50'] * 1000:7.1f}  p95 {measured['p95'] * 1000:7.1f}  "
        f"max {measured['max'] * 1000:7.1f}"
    )
    verdict = "met" if measured["max"] < 1 else "MISSED"
    print(f"  ratio fleet/single-host p50: {measured['p50'] / base['p50']:.2f}x; target max < 1 s: {verdict}")
    if measured["max"] >= 1:
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
