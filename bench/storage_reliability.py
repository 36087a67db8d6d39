"""Reliability under load: PostgreSQL stopped, a worker killed, the settings file deleted, 1,000 connections.

Run by hand (never by the tests; needs root, as it runs ``initdb`` as the ``postgres`` OS user)::

    .venv/bin/python bench/storage_reliability.py                      # every scenario, ~90 s
    .venv/bin/python bench/storage_reliability.py --scenario postgres-down --down 10
    .venv/bin/python bench/storage_reliability.py --scenario worker-killed --workers 2

Each scenario creates a throwaway PostgreSQL 15 cluster on a free port (never the shared server), starts
``botcriptofy serve --workers N`` with only the storage plugin and a small bench plugin whose
``POST /bench/writes`` stores one row in a tenant session and answers 201 after the commit, and runs
``--clients`` concurrent clients that each write unique ids as fast as they are answered.

* ``postgres-down``: after ``--warmup`` seconds the cluster is stopped (``pg_ctl -m fast``) for ``--down``
  seconds, then started again; the load goes on for ``--after`` seconds.
* ``worker-killed``: after ``--warmup`` seconds one uvicorn worker gets SIGKILL; the load goes on for
  ``--after`` seconds while the server replaces it (its storage start-up must run no DDL under traffic).
* ``settings-deleted``: after ``--warmup`` seconds ``settings.toml`` is deleted for ``--down`` seconds, then
  written back; the workers must refuse the missing file and keep writing to PostgreSQL (before the fix they
  restarted storage on the default SQLite file and acknowledged writes that PostgreSQL never saw).
* ``connections``: ``--connections`` (1,000) clients, each on its own connection, write for ``--after`` seconds.

Throughout every scenario a prober asks ``/-/ready`` five times a second on a connection of its own.
Readiness is *truthful* when it answers 503 while PostgreSQL is down (after a grace second for the
check to notice) and 200 whenever the service can write; the samples that disagree are counted.

Reported per scenario: answers by status (201, 503, 500, other) and transport errors (connections reset by a
killed worker), whether every 503 carried Retry-After, the acknowledged writes (201) missing from the
database afterwards (must be 0), the 500s (must be 0), and the seconds from PostgreSQL's restart to the
first 201. Exits 1 when a write was lost, a 500 was answered or readiness was untruthful.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "plugins" / "storage"))  # the throwaway cluster of the storage tests

from _common import BOTCRIPTOFY, free_port, installed_plugins, kernel_server, machine, scratch, write_settings  # noqa: E402
from pg_cluster import ThrowawayCluster  # noqa: E402

BENCH_PLUGIN = '''
"""The write route of bench/storage_reliability.py; visible to the server through PYTHONPATH only."""

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from botcriptofy import Route, hookimpl


class Base(DeclarativeBase):
    pass


class Write(Base):
    __tablename__ = "bench_writes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))


class WritePlugin:
    @hookimpl
    def register_routes(self, kernel):
        async def write(request):
            body = await request.json()
            async with kernel.database().session(tenant_id=body["tenant"]) as session:
                session.add(Write(id=body["id"]))
            return {"id": body["id"]}

        return [Route("/bench/writes", write, methods=["POST"], status_code=201)]


write_plugin = WritePlugin()
'''


def package_bench_plugin(directory: Path) -> Path:
    site = directory / "site"
    (site / "botcriptofy_benchstore").mkdir(parents=True)
    (site / "botcriptofy_benchstore" / "__init__.py").write_text(BENCH_PLUGIN)
    info = site / "botcriptofy_benchstore-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: botcriptofy-benchstore\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[botcriptofy]\nbenchstore = botcriptofy_benchstore:write_plugin\n")
    (info / "RECORD").write_text("")
    return site


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    transport: Counter[str] = field(default_factory=Counter)
    acknowledged: list[str] = field(default_factory=list)
    first_ok_after: dict[str, float] = field(default_factory=dict)
    missing_retry_after: int = 0


def is_sqlite(path: Path) -> bool:
    """A SQLite database file, by its header (prometheus-client's multiprocess files are ``*.db`` too: not data)."""
    try:
        with path.open("rb") as file:
            return file.read(16) == b"SQLite format 3\x00"
    except OSError:  # a directory, or gone meanwhile
        return False


async def load(base: str, clients: int, stop_at: float, tally: Tally, marks: dict[str, float]) -> None:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=15.0) as client:

        async def one_client(number: int) -> None:
            while time.monotonic() < stop_at:
                write_id = str(uuid.uuid4())
                try:
                    response = await client.post("/bench/writes", json={"id": write_id, "tenant": f"tenant-{number % 10}"})
                except httpx.TransportError as error:
                    tally.transport[type(error).__name__] += 1
                    await asyncio.sleep(0.05)
                    continue
                tally.statuses[response.status_code] += 1
                if response.status_code == 201:
                    tally.acknowledged.append(write_id)
                    now = time.monotonic()
                    for mark, at in marks.items():
                        if now >= at:
                            tally.first_ok_after.setdefault(mark, now - at)
                elif response.status_code == 503:
                    if "retry-after" not in response.headers:
                        tally.missing_retry_after += 1
                    await asyncio.sleep(0.05)  # a well-behaved client backs off, if not for Retry-After's full second

        await asyncio.gather(*(one_client(n) for n in range(clients)))


def worker_pids(server_pid: int) -> list[int]:
    """The worker processes: children of the server's master process (not multiprocessing's helpers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == server_pid and b"resource_tracker" not in command:
                children.append(int(entry.name))
    return sorted(children)


@dataclass
class Readiness:
    samples: list[tuple[float, int]] = field(default_factory=list)


async def probe_readiness(base: str, stop_at: float, readiness: Readiness) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:
        while time.monotonic() < stop_at:
            try:
                status = (await client.get("/-/ready")).status_code
            except httpx.TransportError:
                status = 0
            readiness.samples.append((time.monotonic(), status))
            await asyncio.sleep(0.2)


def untruthful(
    readiness: Readiness, down: tuple[float, float] | None, *, skip: tuple[float, float] | None = None, grace: float = 1.0
) -> tuple[int, int]:
    """Samples that said ready while PostgreSQL was down, and not ready while it was up (``grace`` after each change).

    Samples inside ``skip`` (the seconds after a worker is killed, whose connections drop) take no verdict.
    """
    said_ready_while_down = said_down_while_up = 0
    for at, status in readiness.samples:
        if skip is not None and skip[0] <= at <= skip[1]:
            continue
        if down is not None and down[0] + grace <= at <= down[1]:
            said_ready_while_down += status == 200
        elif down is None or not (down[0] <= at <= down[1] + grace):
            said_down_while_up += status != 200
    return said_ready_while_down, said_down_while_up


async def run_scenario(name: str, args: argparse.Namespace) -> bool:
    with scratch(f"bcf-bench-{name}-") as directory:
        cluster = ThrowawayCluster()
        try:
            cluster.start()
            admin = await asyncpg.connect(cluster.url)
            await admin.execute("CREATE DATABASE bench")
            await admin.close()
            url = cluster.url.rsplit("/", 1)[0] + "/bench"
            bench = await asyncpg.connect(url)
            await bench.execute("CREATE TABLE bench_writes (id varchar(36) PRIMARY KEY, tenant_id varchar(64) NOT NULL)")
            await bench.close()
            settings_dir = directory / "settings"
            settings_dir.mkdir()
            others = [plugin for plugin in installed_plugins() if plugin not in ("storage", "benchstore")]
            extra = f'\n[default.storage]\nurl = "{url}"\npool_size = 5\nmax_overflow = 5\n'
            write_settings(settings_dir, state_dir=directory / "state", disabled=others, extra=extra)
            site = package_bench_plugin(directory)
            upgrade = subprocess.run(
                [BOTCRIPTOFY, "--settings", str(settings_dir), "db", "upgrade"],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(site)},
                check=False,
            )
            if upgrade.returncode:
                raise RuntimeError(f"db upgrade failed: {upgrade.stderr or upgrade.stdout}")
            server = kernel_server(
                name,
                settings_dir,
                port=free_port(),
                workers=args.workers,
                log_dir=directory,
                env={"PYTHONPATH": str(site)},
                health="/-/ready",
            )
            try:
                server.wait_ready()
                tally = Tally()
                readiness = Readiness()
                start = time.monotonic()
                total = args.warmup + (args.down if name in ("postgres-down", "settings-deleted") else 0) + args.after
                marks: dict[str, float] = {}
                clients = args.connections if name == "connections" else args.clients
                loader = asyncio.create_task(load(server.base, clients, start + total, tally, marks))
                prober = asyncio.create_task(probe_readiness(server.base, start + total, readiness))
                down: tuple[float, float] | None = None
                await asyncio.sleep(args.warmup)
                if name == "connections":
                    pass
                elif name == "settings-deleted":
                    settings_file = settings_dir / "settings.toml"
                    saved = settings_file.read_text()
                    settings_file.unlink()
                    marks["deleted"] = time.monotonic()
                    await asyncio.sleep(args.down)
                    settings_file.write_text(saved)
                    marks["restored"] = time.monotonic()
                elif name == "postgres-down":
                    stopped = time.monotonic()
                    await asyncio.to_thread(cluster.stop, "fast")
                    await asyncio.sleep(max(0.0, args.down - (time.monotonic() - stopped)))
                    await asyncio.to_thread(cluster.start)
                    marks["restart"] = time.monotonic()
                    down = (stopped, marks["restart"])
                else:
                    pids = worker_pids(server.process.pid)
                    if not pids:
                        raise RuntimeError("found no worker process to kill")
                    os.kill(pids[0], signal.SIGKILL)
                    marks["kill"] = time.monotonic()
                    print(f"killed worker {pids[0]} of {pids}")
                await loader
                await prober
                if name == "worker-killed":
                    print(f"workers afterwards: {worker_pids(server.process.pid)}")
                log_lines = server.log_path.read_text().splitlines()
                errors = [line for line in log_lines if " 500 " in line or "Exception in ASGI application" in line]
                # The kernel keeps its configuration history in the state directory (config-history.sqlite3) by
                # design; any other SQLite file would be data that went around PostgreSQL.
                sqlite_files = sorted(
                    str(path) for path in directory.rglob("*") if is_sqlite(path) and path.name != "config-history.sqlite3"
                )
                refusals = sum("configuration refused" in line for line in log_lines)
            finally:
                server.stop()
            check = await asyncpg.connect(url)
            stored = {row["id"] for row in await check.fetch("SELECT id FROM bench_writes")}
            await check.close()
        finally:
            cluster.remove()
    lost = [write_id for write_id in tally.acknowledged if write_id not in stored]
    answered = sum(tally.statuses.values())
    print(f"\n== {name}: {args.workers} worker(s), {clients} clients, {total:.0f} s of load ==")
    print(f"answers: {answered} ({', '.join(f'{status}: {count}' for status, count in sorted(tally.statuses.items()))})")
    print(f"transport errors: {sum(tally.transport.values())} {dict(tally.transport) or ''}")
    print(f"503 without Retry-After: {tally.missing_retry_after}")
    print(f"acknowledged writes: {len(tally.acknowledged)}, lost: {len(lost)}, stored: {len(stored)}")
    print(f"500 answers: {tally.statuses.get(500, 0)}; server log lines with a 500 or an unhandled exception: {len(errors)}")
    if errors:
        print(f"server log: {errors[0]} ... (BENCH_KEEP=1 keeps the log)")
    for mark, seconds in tally.first_ok_after.items():
        print(f"first 201 after {mark}: {seconds:.2f} s")
    killed = marks.get("kill")
    ready_while_down, down_while_up = untruthful(readiness, down, skip=(killed, killed + 2.0) if killed is not None else None)
    print(
        f"readiness: {len(readiness.samples)} samples; said ready while PostgreSQL was down: {ready_while_down}; "
        f"said not ready while the service could write: {down_while_up}"
    )
    if name == "settings-deleted":
        print(f"'configuration refused' log lines (one per worker expected): {refusals}")
    if sqlite_files:
        print(f"SQLite files created by the service (data written outside PostgreSQL): {sqlite_files}")
    return (
        not lost
        and not tally.statuses.get(500, 0)
        and not tally.missing_retry_after
        and not ready_while_down
        and not down_while_up
        and not sqlite_files
    )


SCENARIOS = ("postgres-down", "worker-killed", "settings-deleted", "connections")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--down", type=float, default=10.0, help="Seconds PostgreSQL stays stopped.")
    parser.add_argument("--after", type=float, default=7.0, help="Seconds of load after the fault.")
    parser.add_argument("--connections", type=int, default=1000, help="Concurrent connections of the connections scenario.")
    args = parser.parse_args()
    print(f"storage reliability bench on {machine()}")
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    ok = True
    for name in scenarios:
        ok = asyncio.run(run_scenario(name, args)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
