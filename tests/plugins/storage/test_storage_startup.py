"""Start-up reads the schema and never changes it when nothing is pending: no DDL under live traffic, honest readiness."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import select

import botcriptofy_storage
from botcriptofy.testing import wait_until
from botcriptofy_storage._migrate import security_failure

from .storage_sample import Comment, Note, SamplePlugin


async def test_a_worker_starting_under_traffic_takes_no_table_lock_and_cannot_deadlock(postgres_url, kernel_harness):
    """Reproduces the restart under load: start-up re-ran ALTER TABLE ... ROW LEVEL SECURITY on every tenant table.

    A request's transaction reads sample_notes; meanwhile another worker starts storage on the same database; then
    the request reads sample_comments. With DDL at start-up the new worker holds sample_comments exclusively while it
    waits for sample_notes: a deadlock, and PostgreSQL aborts one side.
    """
    settings = {"storage": {"url": postgres_url, "relay_enabled": False}}
    serving = await kernel_harness(plugins={"storage": botcriptofy_storage, "sample": SamplePlugin()}, settings=settings)
    db = serving.kernel.database()
    async with db.session(tenant_id="acme") as session:
        session.add(Note(body="before"))
    admin = await asyncpg.connect(postgres_url)
    try:
        async with db.session(tenant_id="acme") as session:
            await session.execute(select(Note))  # the request holds a share lock on sample_notes until it commits
            starting = asyncio.create_task(
                kernel_harness(plugins={"storage": botcriptofy_storage, "sample": SamplePlugin()}, settings=settings)
            )

            async def settled() -> bool:
                if starting.done():
                    return True
                waiting = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                return bool(waiting)

            await wait_until(settled, timeout=60)
            await session.execute(select(Comment))  # the request goes on to the next table
            session.add(Note(body="during"))
        restarted = await starting
    finally:
        await admin.close()
    assert restarted.runtime.plugins["storage"].error is None
    assert (await restarted.client.get("/-/ready")).status_code == 200
    async with restarted.kernel.database().session(tenant_id="acme") as session:
        assert sorted((await session.scalars(select(Note.body))).all()) == ["before", "during"]


async def test_without_auto_upgrade_readiness_names_what_is_missing_and_the_command(database_url, kernel_harness):
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "sample": SamplePlugin()},
        settings={"storage": {"url": database_url, "auto_upgrade": False, "relay_enabled": False}},
    )
    response = await harness.client.get("/-/ready")
    assert response.status_code == 503
    check = response.json()["checks"]["storage.schema"]
    assert check["status"] == "fail"
    text = str(check)
    assert "plugin storage is at (empty), not at head storage_0003" in text and "plugin sample" in text
    assert "botcriptofy db upgrade" in text
    await harness.kernel.stash[botcriptofy_storage._state.STATE].migrate(harness.kernel)
    response = await harness.client.get("/-/ready")
    assert response.status_code == 200, response.text


async def test_readiness_fails_for_a_tenant_table_whose_policy_was_dropped(postgres_url, kernel_harness):
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "sample": SamplePlugin()},
        settings={"storage": {"url": postgres_url, "relay_enabled": False, "auto_upgrade": False}},
    )
    state = harness.kernel.stash[botcriptofy_storage._state.STATE]
    await state.migrate(harness.kernel)
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute("DROP POLICY botcriptofy_tenant ON sample_comments")
    finally:
        await admin.close()
    state.schema_ok = None  # as in a fresh worker
    response = await harness.client.get("/-/ready")
    assert response.status_code == 503
    assert "tenant table sample_comments has no row-level security policy on tenant_id" in str(response.json()["checks"]["storage.schema"])


def test_a_failed_security_upgrade_names_the_real_cause():
    deadlock = asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
    assert "deadlocked with other transactions" in security_failure(deadlock, "botcriptofy_app")
    assert "must own the tables" not in security_failure(deadlock, "botcriptofy_app")
    denied = asyncpg.exceptions.InsufficientPrivilegeError("must be owner of table sample_notes")
    assert "must own the tables" in security_failure(denied, "botcriptofy_app")
