"""Privacy requests benchmark: export and erasure of one person holding 10,000 rows of data.

Run by hand (never by the tests)::

    .venv/bin/python bench/privacy_bench.py                 # SQLite and PostgreSQL (127.0.0.1:5432)
    .venv/bin/python bench/privacy_bench.py --rows 2000 --sqlite-only

The person is a trader signed up through the API, with ``--rows`` rows spread over the plugins'
tables (auth sessions, consent records, audit entries). Each figure is set beside the time to read
the same rows with plain ``SELECT``s in the same run (the floor of any export).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, on_both_databases

import botcriptofy_audit
import botcriptofy_auth
import botcriptofy_billing
import botcriptofy_lgpd
import botcriptofy_storage
from botcriptofy import AuditRecord, Runtime
from botcriptofy.testing import render_settings
from botcriptofy_audit import _chain
from botcriptofy_audit._models import entries
from botcriptofy_audit._state import state_of as audit_state
from botcriptofy_auth._models import Session
from botcriptofy_lgpd import _requests
from botcriptofy_lgpd._models import consents

PASSWORD = "correct horse battery staple"


async def _seed(kernel: Any, user_id: str, tenant_id: str, rows: int) -> None:
    database = kernel.database()
    sessions, ledger = rows * 4 // 10, rows * 3 // 10
    trail = rows - sessions - ledger
    moment = datetime.now(UTC)
    async with database.session(system=True) as session:
        session.add_all(
            Session(
                tenant_id=tenant_id,
                user_id=user_id,
                method="password",
                ip=f"10.0.{n // 250}.{n % 250}",
                user_agent="bench",
                expires_at=moment + timedelta(days=1),
            )
            for n in range(sessions)
        )
        await session.execute(
            sa.insert(consents),
            [
                {
                    "tenant_id": tenant_id,
                    "user_id": user_id,
                    "purpose": "analytics",
                    "granted": n % 2 == 0,
                    "policy_version": "v",
                    "policy_hash": "0" * 64,
                    "channel": "web",
                    "client_address": "10.0.0.1",
                    "recorded_at": moment,
                }
                for n in range(ledger)
            ],
        )
    state = audit_state(kernel)
    for n in range(trail):
        await _chain.append(
            database,
            state.keyring,
            state.policy,
            AuditRecord(action="bench.row", actor_id=user_id, tenant_id=tenant_id, subject=user_id, details={"n": n}),
        )


async def _plain_read(kernel: Any, user_id: str) -> float:
    started = time.perf_counter()
    async with kernel.database().session(system=True) as session:
        for table, column in (
            (Session.__table__, Session.__table__.c.user_id),
            (consents, consents.c.user_id),
            (entries, entries.c.subject),
        ):
            (await session.execute(sa.select(table).where(column == user_id))).all()
    return time.perf_counter() - started


async def bench_database(name: str, url: str, rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bcf-privacy-bench-") as scratch:
        work = Path(scratch)
        (work / "settings").mkdir()
        (work / "settings" / "settings.toml").write_text(
            render_settings(
                {
                    "storage": {"url": url},
                    "auth": {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1},
                    "audit": {"checkpoint_every": 1000},
                    "lgpd": {"sweep_interval": 3600},
                },
                state_dir=work / "state",
            )
        )
        plugins = {
            "storage": botcriptofy_storage,
            "auth": botcriptofy_auth,
            "billing": botcriptofy_billing.plugin,
            "audit": botcriptofy_audit,
            "lgpd": botcriptofy_lgpd,
        }
        runtime = Runtime(work / "settings", env="testing", plugins=plugins, discover=False, watch=False)
        await runtime.start()
        try:
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime), base_url="http://bench")
            made = (
                await client.post(
                    "/v1/auth/signup",
                    json={"email": "bench@example.com", "password": PASSWORD, "name": "Bench Person", "account_type": "trader"},
                )
            ).json()
            user_id, tenant_id = made["user"]["id"], made["tenant"]["id"]
            headers = {"Authorization": f"Bearer {made['tokens']['access_token']}"}
            kernel = runtime.current
            await _seed(kernel, user_id, tenant_id, rows)
            plain = min([await _plain_read(kernel, user_id) for _ in range(3)])
            row = await _requests.create(
                kernel, user_id=user_id, tenant_id=tenant_id, kind="export", requested_by=user_id, detail={"owned_tenant_id": tenant_id}
            )
            started = time.perf_counter()
            done = await _requests.process(kernel, row["id"])
            export_seconds = time.perf_counter() - started
            assert done is not None and done["status"] == "completed", done
            started = time.perf_counter()
            erased = await client.post("/v1/privacy/erasure", json={"password": PASSWORD, "confirm": True}, headers=headers)
            erase_seconds = time.perf_counter() - started
            assert erased.status_code == 200 and erased.json()["status"] == "completed", erased.text
            await client.aclose()
        finally:
            await runtime.stop()
    return {
        "database": name,
        "rows": rows,
        "plain_select_s": round(plain, 3),
        "export_s": round(export_seconds, 3),
        "export_zip_bytes": done["report"]["bytes"],
        "export_vs_plain_select": round(export_seconds / plain, 1),
        "erasure_s": round(erase_seconds, 3),
        "erasure_vs_plain_select": round(erase_seconds / plain, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    print(f"machine: {machine()}")
    results = await on_both_databases(bench_database, options.rows, sqlite_only=options.sqlite_only, prefix="bcf-privacy-")
    for result in results:
        print(json.dumps(result))
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
