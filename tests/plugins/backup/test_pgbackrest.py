"""pgBackRest on a cluster of the test's own: backups, WAL archiving, check, verify, retention, restores."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest

from botcriptofy_backup._pgbackrest import PgBackRestError, free_port

from .conftest import engine_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(180)]


def engine(cluster, **extra):
    return engine_for(cluster.root, cluster.data, cluster.port, cluster.sockets, cluster.stanza, **extra)


async def test_full_diff_incr_check_verify_point_in_time_restore_retention_and_a_tampered_repository(pg_cluster):
    pg = engine(pg_cluster)
    await pg.stanza_create()
    await pg.check()
    pg_cluster.psql("CREATE TABLE ledger (id bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
    pg_cluster.psql("INSERT INTO ledger (id) SELECT generate_series(1, 100)")
    full = await pg.backup("full")
    pg_cluster.psql("INSERT INTO ledger (id) SELECT generate_series(101, 150)")
    diff = await pg.backup("diff")
    pg_cluster.psql("INSERT INTO ledger (id) SELECT generate_series(151, 160)")
    incr = await pg.backup("incr")
    assert [full["type"], diff["type"], incr["type"]] == ["full", "diff", "incr"]
    assert diff["prior"] == full["id"] and incr["prior"] == diff["id"]
    assert "aes-256-cbc" in pg.config_path.read_text() and oct(pg.config_path.stat().st_mode & 0o777) == "0o600"

    mark = datetime.fromisoformat(pg_cluster.psql("SELECT clock_timestamp()").replace(" ", "T").replace("+00", "+00:00"))
    await asyncio.sleep(0.3)
    pg_cluster.psql("INSERT INTO ledger (id) SELECT generate_series(161, 170)")
    await pg.check()  # switches WAL and waits until the segment is archived
    report = await pg.verify()
    assert report["valid"]

    target = pg_cluster.root / "pitr"
    await pg.restore(target, kind="time", target_time=mark)
    port = free_port()
    try:
        await pg.start_cluster(target, port)
        counts = await pg.table_counts(target / "socket", port)
    finally:
        await pg.stop_cluster(target)
    assert counts == {"public.ledger": 160}

    retained = engine(pg_cluster, retention_full=1)
    newest = await retained.backup("full")  # expire runs after it: the older full and its diff and incr go
    assert [item["id"] for item in await retained.backups()] == [newest["id"]]
    files = sorted(
        path
        for path in (pg_cluster.root / "repo" / "backup" / pg_cluster.stanza / newest["id"]).rglob("*")
        if path.is_file() and path.stat().st_size > 1000 and "manifest" not in path.name
    )
    raw = bytearray(files[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    files[0].write_bytes(bytes(raw))
    with pytest.raises(PgBackRestError, match="verify"):
        await retained.verify()


async def test_killed_between_two_backups_the_restore_holds_every_transaction_acknowledged_before_the_last_archived_segment(pg_cluster):
    import asyncpg

    pg = engine(pg_cluster)
    await pg.stanza_create()
    pg_cluster.psql("CREATE TABLE load (id bigint PRIMARY KEY, payload text NOT NULL)")
    await pg.backup("full")

    acknowledged: list[int] = []
    stop = asyncio.Event()

    async def load() -> None:
        connection = await asyncpg.connect(host=pg_cluster.socket, port=pg_cluster.port, user="postgres", database="postgres")
        try:
            n = 0
            while not stop.is_set():
                n += 1
                await connection.execute("INSERT INTO load VALUES ($1, repeat('x', 200))", n)  # autocommit: acknowledged on return
                acknowledged.append(n)
        finally:
            await connection.close()

    loader = asyncio.create_task(load())
    await asyncio.sleep(0.5)
    await pg.backup("incr")  # the first of two backups; the second never comes
    await asyncio.sleep(0.5)
    admin = await asyncpg.connect(host=pg_cluster.socket, port=pg_cluster.port, user="postgres", database="postgres")
    try:
        before_switch = len(acknowledged)
        segment = await admin.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + 30
        while (await admin.fetchval("SELECT last_archived_wal FROM pg_stat_archiver") or "") < segment:
            assert time.monotonic() < deadline, "the switched segment was never archived"
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
    await asyncio.sleep(0.3)  # more transactions land in the segment that will never be archived
    pg_cluster.kill()
    stop.set()
    with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
        await loader
    attempted = len(acknowledged) + 1
    assert before_switch > 50

    target = pg_cluster.root / "restored"
    await pg.restore(target)  # the latest point: the newest backup and every archived segment after it
    port = free_port()
    try:
        await pg.start_cluster(target, port)
        ids = await pg.psql(target / "socket", port, "SELECT id FROM load ORDER BY id")
    finally:
        await pg.stop_cluster(target)
    restored = [int(line) for line in ids.split()]
    assert set(acknowledged[:before_switch]) <= set(restored)
    assert restored == list(range(1, len(restored) + 1)) and len(restored) <= attempted
    print(f"acknowledged {len(acknowledged)}, before the last archived segment {before_switch}, restored {len(restored)}")
