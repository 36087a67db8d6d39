"""The hash chain: appends, checkpoints, verification naming each kind of tampering, concurrency, append-only tables."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import text

from botcriptofy.testing import wait_until
from botcriptofy_audit import _chain
from botcriptofy_audit._models import checkpoints, entries
from botcriptofy_audit._state import state_of

TENANT = "tenant-a"


async def _fill(kernel, count: int, tenant: str | None = TENANT) -> None:
    for number in range(count):
        await kernel.audit(
            "test.action", actor_id="user-1", actor_kind="user", tenant_id=tenant, target=f"thing:{number}", details={"n": number}
        )


async def _verify(kernel, chain: str | None = None) -> dict:
    return await _chain.verify(kernel.database(), state_of(kernel).keyring, chain=chain)


async def _tamper(kernel, *statements: str) -> None:
    """Run SQL with the append-only triggers out of the way, as an attacker with the owner's rights would."""
    database = kernel.database()
    if database.dialect == "postgresql":
        connection = await asyncpg.connect(database.url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            async with connection.transaction():
                await connection.execute("SET LOCAL session_replication_role = replica")
                for statement in statements:
                    await connection.execute(statement)
        finally:
            await connection.close()
        return
    async with database.session(system=True, write_lock=True) as session:
        connection = await session.connection()
        names = (await connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))).scalars().all()
        saved = (await connection.execute(text("SELECT sql FROM sqlite_master WHERE type = 'trigger'"))).scalars().all()
        for name in names:
            await connection.execute(text(f"DROP TRIGGER {name}"))
        for statement in statements:
            await connection.exec_driver_sql(statement)
        for sql in saved:
            await connection.exec_driver_sql(sql)


async def _row(kernel, seq: int, chain: str = TENANT) -> dict:
    async with kernel.database().session(system=True) as session:
        return dict((await session.execute(sa.select(entries).where(entries.c.chain == chain, entries.c.seq == seq))).mappings().one())


async def test_entries_chain_and_verify(make_audit):
    harness = await make_audit(checkpoint_every=4)
    kernel = harness.kernel
    await _fill(kernel, 10)
    await _fill(kernel, 3, tenant=None)
    report = await _verify(kernel)
    assert report["valid"], report
    by_chain = {c["chain"]: c for c in report["chains"]}
    assert by_chain[TENANT]["entries"] == 10 and by_chain[TENANT]["checkpoints"] == 2
    assert by_chain["platform"]["entries"] == 3
    first, second = await _row(kernel, 1), await _row(kernel, 2)
    assert first["prev_hash"] == "0" * 64 and second["prev_hash"] == first["hash"]
    assert first["hash"] == _chain.entry_hash(first)


async def test_verify_names_an_edited_entry(make_audit):
    harness = await make_audit()
    kernel = harness.kernel
    await _fill(kernel, 8)
    await _tamper(kernel, f"UPDATE audit_entries SET details = '{{\"n\":99}}' WHERE chain = '{TENANT}' AND seq = 5")
    problem = (await _verify(kernel))["first_problem"]
    assert (problem["seq"], problem["kind"]) == (5, "edited")


async def test_verify_names_an_edited_and_rehashed_entry(make_audit):
    harness = await make_audit()
    kernel = harness.kernel
    await _fill(kernel, 8)
    row = await _row(kernel, 3)
    row["details"] = '{"n":42}'
    forged = _chain.entry_hash(row)
    await _tamper(kernel, f"UPDATE audit_entries SET details = '{row['details']}', hash = '{forged}' WHERE chain = '{TENANT}' AND seq = 3")
    problem = (await _verify(kernel))["first_problem"]
    assert (problem["seq"], problem["kind"]) == (3, "edited")


async def test_verify_names_a_deleted_entry(make_audit):
    harness = await make_audit()
    kernel = harness.kernel
    await _fill(kernel, 8)
    await _tamper(kernel, f"DELETE FROM audit_entries WHERE chain = '{TENANT}' AND seq = 4")
    problem = (await _verify(kernel))["first_problem"]
    assert (problem["seq"], problem["kind"]) == (4, "deleted")


async def test_verify_names_an_inserted_entry(make_audit):
    harness = await make_audit()
    kernel = harness.kernel
    await _fill(kernel, 8)
    previous = await _row(kernel, 4)
    forged = {**previous, "seq": 5, "prev_hash": previous["hash"], "details": '{"n":"forged"}', "event_id": None}
    forged["hash"] = _chain.entry_hash(forged)
    columns = [c for c in forged if c != "id"]
    values = ", ".join(
        "NULL" if forged[c] is None else (str(forged[c]) if isinstance(forged[c], int) else f"'{forged[c]}'") for c in columns
    )
    # Make room: every later entry moves one place up (in two steps, so the unique (chain, seq) holds).
    await _tamper(
        kernel,
        f"UPDATE audit_entries SET seq = seq + 1000 WHERE chain = '{TENANT}' AND seq >= 5",
        f"UPDATE audit_entries SET seq = seq - 999 WHERE chain = '{TENANT}' AND seq >= 1000",
        f"INSERT INTO audit_entries ({', '.join(columns)}) VALUES ({values})",
    )
    problem = (await _verify(kernel))["first_problem"]
    assert (problem["seq"], problem["kind"]) == (5, "inserted")


async def test_verify_names_reordered_entries(make_audit):
    harness = await make_audit()
    kernel = harness.kernel
    await _fill(kernel, 8)
    await _tamper(
        kernel,
        f"UPDATE audit_entries SET seq = 1005 WHERE chain = '{TENANT}' AND seq = 5",
        f"UPDATE audit_entries SET seq = 5 WHERE chain = '{TENANT}' AND seq = 6",
        f"UPDATE audit_entries SET seq = 6 WHERE chain = '{TENANT}' AND seq = 1005",
    )
    problem = (await _verify(kernel))["first_problem"]
    assert (problem["seq"], problem["kind"]) == (5, "reordered")


async def test_verify_names_a_truncated_tail(make_audit):
    harness = await make_audit(checkpoint_every=5)
    kernel = harness.kernel
    await _fill(kernel, 10)
    await _tamper(kernel, f"DELETE FROM audit_entries WHERE chain = '{TENANT}' AND seq >= 8")
    report = await _verify(kernel)
    assert not report["valid"]
    assert (report["first_problem"]["seq"], report["first_problem"]["kind"]) == (8, "truncated")


async def test_verify_refuses_a_forged_checkpoint(make_audit):
    harness = await make_audit(checkpoint_every=5)
    kernel = harness.kernel
    await _fill(kernel, 5)
    await _tamper(kernel, f"UPDATE audit_checkpoints SET signature = 'AAAA' || substr(signature, 5) WHERE chain = '{TENANT}'")
    assert (await _verify(kernel))["first_problem"]["kind"] == "checkpoint"


async def test_checkpoints_verify_across_key_rotation(make_audit):
    from botcriptofy_audit._signing import new_key_entry, public_entry

    old = new_key_entry("k1")
    harness = await make_audit(signing_keys=[old], checkpoint_every=2)
    await _fill(harness.kernel, 4)
    new = new_key_entry("k2")
    settings = {
        "storage": {"url": harness.kernel.database().url, "relay_poll_interval": 0.05},
        "audit": {"signing_keys": [new], "verify_keys": [public_entry(old)], "checkpoint_every": 2},
    }
    assert (await harness.apply(settings)).applied
    await _fill(harness.kernel, 2)
    async with harness.kernel.database().session(system=True) as session:
        used = set((await session.scalars(sa.select(checkpoints.c.key_id))).all())
    assert used == {"k1", "k2"}
    assert (await _verify(harness.kernel))["valid"]


async def test_eight_concurrent_appends_to_one_chain_keep_it_valid(make_audit):
    harness = await make_audit(checkpoint_every=3)
    kernel = harness.kernel

    async def writer(number: int) -> None:
        for round_ in range(5):
            await kernel.audit("test.concurrent", actor_id=f"w{number}", tenant_id=TENANT, details={"round": round_})

    await asyncio.gather(*(writer(n) for n in range(8)))
    report = await _verify(kernel, TENANT)
    assert report["valid"], report
    assert report["chains"][0]["entries"] == 40 and report["chains"][0]["head_seq"] == 40


async def test_the_tables_refuse_update_and_delete_for_everyone(make_audit):
    harness = await make_audit(checkpoint_every=1)
    kernel = harness.kernel
    await _fill(kernel, 2)
    database = kernel.database()
    for statement in ("UPDATE audit_entries SET outcome = 'x'", "DELETE FROM audit_entries", "UPDATE audit_checkpoints SET seq = 9"):
        with pytest.raises(sa.exc.DBAPIError, match=r"append-only|permission denied"):
            async with database.engine.begin() as connection:  # the owner (a superuser on PostgreSQL): the trigger refuses
                if database.dialect == "postgresql":
                    await connection.execute(text("SELECT set_config('app.system', 'on', true)"))
                await connection.execute(text(statement))
    if database.dialect == "postgresql":
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            async with database.engine.begin() as connection:
                await connection.execute(text("TRUNCATE audit_entries"))
    assert (await _verify(kernel))["valid"]


async def admin_count(url: str, action: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM audit_entries WHERE action = $1", action))
    finally:
        await connection.close()


GRANTS_LOCK = "SELECT pg_advisory_xact_lock(hashtext('botcriptofy_audit.grants'))"


async def operator_grants(url: str, *statements: str) -> None:
    """An operator's privilege script, run while the service is up: it holds the audit plugin's lock."""
    admin = await asyncpg.connect(url)
    try:
        async with admin.transaction():
            await admin.execute(GRANTS_LOCK)
            for statement in statements:
                await admin.execute(statement)
    finally:
        await admin.close()


async def outbox_settled(url: str) -> bool:
    """Every published event handed to its handlers, and every delivery done (or given up)."""
    connection = await asyncpg.connect(url)
    try:
        return not await connection.fetchval(
            "SELECT (SELECT count(*) FROM botcriptofy_outbox WHERE dispatched_at IS NULL)"
            " + (SELECT count(*) FROM botcriptofy_outbox_delivery WHERE status = 'pending')"
        )
    finally:
        await connection.close()


async def test_securing_the_tables_retries_when_an_operator_grants_at_the_same_moment(postgres_url, kernel_harness):
    import botcriptofy_audit
    import botcriptofy_storage
    from botcriptofy_audit._grants import secure

    role = "bcf_audit_race_" + postgres_url.rsplit("_", 1)[-1][:10]
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f"DROP ROLE IF EXISTS {role}")
    await admin.execute(f"CREATE ROLE {role}")
    try:
        url = postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1)
        harness = await kernel_harness(
            plugins={"storage": botcriptofy_storage, "audit": botcriptofy_audit},
            settings={"storage": {"url": url, "rls_role": ""}},
        )
        # An operator's GRANT without the plugin's lock, not yet committed, has rewritten audit_entries' catalog row...
        transaction = admin.transaction()
        await transaction.start()
        await admin.execute(f"GRANT UPDATE ON audit_entries TO {role}")
        securing = asyncio.ensure_future(secure(harness.kernel.database()))
        watcher = await asyncpg.connect(postgres_url)
        try:

            async def waiting() -> bool:
                return bool(
                    await watcher.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND query LIKE 'REVOKE%'"
                    )
                )

            await wait_until(waiting, timeout=10)
        finally:
            await watcher.close()
        # ...and commits while the plugin's REVOKE waits on that row: the REVOKE fails once, and is tried again.
        await transaction.commit()
        await asyncio.wait_for(securing, 10)
        assert not await admin.fetchval(f"SELECT has_table_privilege('{role}', 'audit_entries', 'UPDATE')")
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


async def test_a_non_owner_application_role_may_only_insert_and_select(postgres_url, kernel_harness):
    import botcriptofy_audit
    import botcriptofy_lgpd
    import botcriptofy_storage

    role = "bcf_audit_app_" + postgres_url.rsplit("_", 1)[-1][:10]
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.execute(f"CREATE ROLE {role} LOGIN")
    finally:
        await admin.close()
    try:
        url = postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1)
        harness = await kernel_harness(
            plugins={"storage": botcriptofy_storage, "audit": botcriptofy_audit, "lgpd": botcriptofy_lgpd},
            settings={"storage": {"url": url, "rls_role": "", "relay_poll_interval": 0.05}, "plugins": {"disabled": ["lgpd"]}},
        )
        # The operator gives the application role everything on the schema's tables, as for any other plugin...
        await operator_grants(
            postgres_url,
            f"GRANT USAGE ON SCHEMA public TO {role}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO {role}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
        )
        # ...and the audit plugin takes UPDATE, DELETE and TRUNCATE back when it starts.
        base = {"storage": {"url": url, "rls_role": "", "relay_poll_interval": 0.05}}
        await harness.apply({**base, "plugins": {"disabled": ["audit", "lgpd"]}})
        await harness.apply({**base, "plugins": {"disabled": ["lgpd"]}})
        await harness.kernel.audit("test.owner", tenant_id=TENANT)
        app = await asyncpg.connect(postgres_url.replace("postgres@", f"{role}@"))
        try:
            # Row-level security hides tenant rows from an unscoped session; the privilege is what matters here.
            assert await app.fetchval("SELECT has_table_privilege(current_user, 'audit_entries', 'SELECT')")
            assert await admin_count(postgres_url, "test.owner") == 1
            assert await app.fetchval("SELECT has_table_privilege(current_user, 'audit_entries', 'INSERT')")
            for statement in (
                "UPDATE audit_entries SET outcome = 'x'",
                "DELETE FROM audit_entries",
                "TRUNCATE audit_entries",
                "DELETE FROM audit_checkpoints",
                "INSERT INTO audit_purge_permits (chain, up_to_seq, created_at) VALUES ('x', 9, 'now')",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await app.execute(statement)
        finally:
            await app.close()
        # A plugin switched on later runs its migrations, and upgrades grant every table again: the audit takes it back.
        # The re-enable's config-applied handler secures the tables again off the request path: let it finish
        # first, or it would take the grant below back before the plugin switched on later does.
        await wait_until(lambda: outbox_settled(postgres_url), timeout=30)
        # (The operator's script takes the plugin's lock, as the README asks, instead of failing with "tuple
        # concurrently updated" when it meets one of the plugin's own GRANT/REVOKE statements.)
        await operator_grants(postgres_url, f"GRANT UPDATE, DELETE ON audit_entries TO {role}")
        admin = await asyncpg.connect(postgres_url)
        try:
            assert await admin.fetchval(f"SELECT has_table_privilege('{role}', 'audit_entries', 'UPDATE')")
            assert (await harness.apply(base)).applied

            async def revoked() -> bool:
                return not await admin.fetchval(f"SELECT has_table_privilege('{role}', 'audit_entries', 'UPDATE')")

            await wait_until(revoked, timeout=10)
        finally:
            await admin.close()
    finally:
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(f"DROP OWNED BY {role}")
            await admin.execute(f"DROP ROLE IF EXISTS {role}")
        finally:
            await admin.close()


async def test_without_the_plugin_kernel_audit_is_a_no_op_that_logs_once(kernel_harness, caplog):
    from botcriptofy import _kernel

    harness = await kernel_harness()
    _kernel._AUDIT_WARNED.clear()
    with caplog.at_level("WARNING", logger="botcriptofy"):
        await harness.kernel.audit("test.nothing")
        await harness.kernel.audit("test.nothing")
    assert [r.message for r in caplog.records].count(
        "no plugin records audit entries (enable the audit plugin); 'test.nothing' and later entries are not kept"
    ) == 1
    assert await harness.kernel.has_consent("someone", "marketing_email") is False


def test_canonical_json_is_stable():
    assert _chain.canonical({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'
    assert json.loads(_chain.canonical({"x": None})) == {"x": None}


async def test_purge_keeps_legal_minimums_and_the_rest_still_verifies(make_audit):
    from datetime import UTC, datetime, timedelta

    from botcriptofy import AuditRecord
    from botcriptofy_audit._service import purge

    harness = await make_audit(checkpoint_every=1000)
    kernel = harness.kernel
    state = state_of(kernel)
    old = datetime.now(UTC) - timedelta(days=400)
    for action in ("auth.login", "auth.login", "billing.payment_succeeded", "auth.login"):
        await _chain.append(kernel.database(), state.keyring, state.policy, AuditRecord(action=action, tenant_id=TENANT, occurred_at=old))
    await _fill(kernel, 2)
    removed = await purge(kernel.database(), state.keyring, retention_days=183)
    # The two old logins go; the billing entry (5 years) stops the purge, so everything after it stays.
    assert removed == {TENANT: 2}
    report = await _verify(kernel)
    assert report["valid"], report
    assert report["chains"][0]["entries"] == 4
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        async with kernel.database().engine.begin() as connection:
            if kernel.database().dialect == "postgresql":
                await connection.execute(text("SELECT set_config('app.system', 'on', true)"))
            await connection.execute(text(f"DELETE FROM audit_entries WHERE chain = '{TENANT}' AND seq = 3"))


def test_the_verify_command_exits_non_zero_naming_the_entry(tmp_path):
    import sqlite3
    import subprocess
    import sys
    from pathlib import Path

    from botcriptofy.testing import render_settings

    settings = tmp_path / "settings"
    settings.mkdir()
    database = tmp_path / "audit.db"
    # Every installed plugin is enabled: the audit commands start only storage and audit (pass_kernel(needs=...)).
    (settings / "settings.toml").write_text(
        render_settings({"storage": {"url": f"sqlite+aiosqlite:///{database}"}}, state_dir=tmp_path / "state")
    )
    cli = [str(Path(sys.executable).parent / "botcriptofy"), "--settings", str(settings)]
    environment = {"BOTCRIPTOFY_ENV": "testing", "PATH": "/usr/bin:/bin"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], capture_output=True, text=True, env=environment, timeout=90)

    assert run("audit", "checkpoint").returncode == 0  # starts the service once: migrations, no entries yet
    connection = sqlite3.connect(database)
    with connection:
        for seq, previous in ((1, "0" * 64), (2, None)):
            row = {
                "chain": "t1",
                "seq": seq,
                "prev_hash": previous,
                "occurred_at": "2026-11-29T00:00:00.000000Z",
                "tenant_id": "t1",
                "actor_id": None,
                "actor_kind": None,
                "action": "test.cli",
                "target": None,
                "outcome": "success",
                "subject": None,
                "request_id": None,
                "client_address": None,
                "event_id": None,
                "details": "{}",
            }
            if previous is None:
                row["prev_hash"] = connection.execute("SELECT hash FROM audit_entries WHERE seq = 1").fetchone()[0]
            row["hash"] = _chain.entry_hash(row)
            connection.execute(f"INSERT INTO audit_entries ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    ok = run("audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "t1: 2 entries" in ok.stdout
    with connection:
        connection.execute("DROP TRIGGER audit_entries_no_update")
        connection.execute("UPDATE audit_entries SET outcome = 'failure' WHERE seq = 2")
    connection.close()
    broken = run("audit", "verify", "--tenant", "t1")
    assert broken.returncode == 1
    assert "entry 2 was changed" in broken.stderr and "kind edited, seq 2" in broken.stderr


async def test_privileges_are_normalised_by_one_connection_at_a_time(postgres_url, kernel_harness):
    """Start-up, the config-applied handler and other workers secure the tables at once: no 'tuple concurrently updated'."""
    import botcriptofy_audit
    import botcriptofy_storage
    from botcriptofy_audit._grants import secure

    url = postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "audit": botcriptofy_audit}, settings={"storage": {"url": url, "pool_size": 8}}
    )
    database = harness.kernel.database()
    for _ in range(5):
        await asyncio.gather(*(secure(database) for _ in range(6)))
    admin = await asyncpg.connect(postgres_url)
    try:
        assert not await admin.fetchval("SELECT has_table_privilege('public', 'audit_entries', 'UPDATE')")
    finally:
        await admin.close()
