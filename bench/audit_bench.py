"""Audit trail benchmark: the latency one ``kernel.audit(...)`` adds to a request, and chain verification throughput.

Run by hand (never by the tests)::

    .venv/bin/python bench/audit_bench.py                       # SQLite and PostgreSQL (127.0.0.1:5432), ~1 minute
    .venv/bin/python bench/audit_bench.py --requests 500 --entries 5000 --sqlite-only

In process (httpx over ASGI, no server, no network): a route that answers ``{"ok": true}`` is the
baseline; the same route that records one audit entry first is measured in the same run,
alternating rounds, so the added p50/p95 are differences between two distributions taken under
the same machine load. Verification throughput is compared with recomputing the entries' hashes in
memory (the floor: hashing without reading the database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, percentile

import botcriptofy_audit
import botcriptofy_storage
from botcriptofy import Route, hookimpl, kernel_of
from botcriptofy.testing import render_settings
from botcriptofy_audit import _chain
from botcriptofy_audit._models import entries
from botcriptofy_audit._state import state_of

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


class Probe:
    @hookimpl
    def register_routes(self, kernel: Any) -> list[Route]:
        async def plain(request: Any) -> dict[str, bool]:
            return {"ok": True}

        async def audited(request: Any) -> dict[str, bool]:
            await kernel_of(request).audit(
                "bench.request",
                actor_id="user-1",
                actor_kind="user",
                tenant_id="tenant-bench",
                target="thing:1",
                request_id=request.headers.get("x-request-id"),
                client_address="127.0.0.1",
                details={"n": 1},
            )
            return {"ok": True}

        return [Route("/bench/plain", plain), Route("/bench/audited", audited)]


async def _runtime(url: str, work: Path) -> Any:
    from botcriptofy import Runtime

    settings = work / "settings"
    settings.mkdir()
    (settings / "settings.toml").write_text(
        render_settings({"storage": {"url": url}, "audit": {"checkpoint_every": 1000}}, state_dir=work / "state")
    )
    runtime = Runtime(
        settings,
        env="testing",
        plugins={"storage": botcriptofy_storage, "audit": botcriptofy_audit, "probe": Probe()},
        discover=False,
        watch=False,
    )
    await runtime.start()
    return runtime


async def _seed_chain(database: Any, chain: str, count: int) -> None:
    """Extend ``chain`` by ``count`` valid entries in a few large transactions (seeding only; appends are measured above)."""
    async with database.session(system=True) as session:
        head = (
            (await session.execute(entries.select().where(entries.c.chain == chain).order_by(entries.c.seq.desc()).limit(1)))
            .mappings()
            .first()
        )
    seq, previous = (head["seq"], head["hash"]) if head else (0, "0" * 64)
    while count > 0:
        batch = []
        for _ in range(min(count, 1000)):
            seq += 1
            row = {
                "chain": chain,
                "seq": seq,
                "prev_hash": previous,
                "occurred_at": _chain.timestamp(),
                "tenant_id": chain,
                "actor_id": "user-1",
                "actor_kind": "user",
                "action": "bench.fill",
                "target": None,
                "outcome": "success",
                "subject": "user-1",
                "request_id": None,
                "client_address": "127.0.0.1",
                "event_id": None,
                "details": _chain.canonical({"n": seq}),
            }
            row["hash"] = previous = _chain.entry_hash(row)
            batch.append(row)
        async with database.session(system=True) as session:
            await session.execute(entries.insert(), batch)
        count -= len(batch)


async def _latencies(client: httpx.AsyncClient, path: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.get(path)
        samples.append((time.perf_counter() - started) * 1e3)
        assert response.status_code == 200, response.text
    return samples


async def bench_database(name: str, url: str, requests: int, count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bcf-audit-bench-") as scratch:
        runtime = await _runtime(url, Path(scratch))
        try:
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime), base_url="http://bench")
            await _latencies(client, "/bench/plain", 50)
            await _latencies(client, "/bench/audited", 50)
            plain: list[float] = []
            audited: list[float] = []
            for _ in range(4):  # alternate, so both see the same machine load
                plain += await _latencies(client, "/bench/plain", requests // 4)
                audited += await _latencies(client, "/bench/audited", requests // 4)
            kernel = runtime.current
            database, keyring = kernel.database(), state_of(kernel).keyring
            await _seed_chain(database, "tenant-bench", count - requests - 50)
            started = time.perf_counter()
            report = await _chain.verify(database, keyring, chain="tenant-bench")
            verify_seconds = time.perf_counter() - started
            assert report["valid"], report
            async with database.session(system=True) as session:
                rows = [dict(r) for r in (await session.execute(entries.select().where(entries.c.chain == "tenant-bench"))).mappings()]
            started = time.perf_counter()
            for row in rows:
                _chain.entry_hash(row)
            hash_seconds = time.perf_counter() - started
            await client.aclose()
        finally:
            await runtime.stop()
    verified = report["entries"]
    return {
        "database": name,
        "requests_each": len(plain),
        "plain_p50_ms": round(statistics.median(plain), 3),
        "plain_p95_ms": round(percentile(plain, 95), 3),
        "audited_p50_ms": round(statistics.median(audited), 3),
        "audited_p95_ms": round(percentile(audited, 95), 3),
        "added_p50_ms": round(statistics.median(audited) - statistics.median(plain), 3),
        "added_p95_ms": round(percentile(audited, 95) - percentile(plain, 95), 3),
        "verified_entries": verified,
        "verify_entries_per_s": round(verified / verify_seconds),
        "hash_only_entries_per_s": round(len(rows) / hash_seconds),
        "verify_vs_hash_only": round((verified / verify_seconds) / (len(rows) / hash_seconds), 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=800, help="requests per route (default 800)")
    parser.add_argument("--entries", type=int, default=10_000, help="entries in the verified chain (default 10,000)")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    options = parser.parse_args()
    print(f"machine: {machine()}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bcf-audit-sqlite-") as directory:
        results.append(await bench_database("sqlite", f"sqlite+aiosqlite:///{directory}/bench.db", options.requests, options.entries))
        print(json.dumps(results[-1]), flush=True)
    if not options.sqlite_only:
        name = f"bcf_bench_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(POSTGRES_ADMIN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
            results.append(await bench_database("postgresql", url, options.requests, options.entries))
            print(json.dumps(results[-1]), flush=True)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
