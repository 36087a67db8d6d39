"""Backup and restore throughput of the backup plugin against plain copies measured in the same run; RTO per GB.

Run by hand (never by the tests; needs root, as it runs ``initdb`` and pgBackRest as the ``postgres``
OS user on a throwaway cluster with its own port; the shared server is never touched)::

    .venv/bin/python bench/backup_bench.py [--sqlite-mb 200] [--pgbench-scale 20]

SQLite: a database of ``--sqlite-mb`` MB; the plugin's backup (online snapshot through SQLite's
backup API, zlib, AES-256-GCM) and restore (decrypt, decompress, tag check), against a plain file
copy of the same file. PostgreSQL: ``pgbench -i -s <scale>``; pgBackRest full backup (lz4,
aes-256-cbc, process-max 2) and restore to a directory up to a promoted, connectable cluster,
against ``pg_dump -Fc`` and ``pg_restore`` into an empty database. Throughput is the database's
size on disk divided by wall time. RTO per GB is extrapolated linearly from the measured size; it
is a projection, not a measurement at 1 GB.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import machine, scratch  # noqa: E402

from botcriptofy_backup._keys import Keyring  # noqa: E402
from botcriptofy_backup._pgbackrest import PG_BIN, PgBackRest, free_port  # noqa: E402
from botcriptofy_backup._sqlite import create, restore, snapshot, verify  # noqa: E402

MB = 1024 * 1024
GB = 1024 * MB
PG_USER = "postgres"


def timed(action):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def line(name: str, size: int, seconds: float, baseline: float | None = None) -> str:
    rate = size / MB / seconds
    ratio = "" if baseline is None else f"  ({seconds / baseline:5.2f}x the baseline's time)"
    return f"  {name:<44} {seconds:7.2f} s  {rate:8.1f} MB/s{ratio}"


def make_sqlite(path: Path, megabytes: int) -> None:
    """Trading-like rows: half random (incompressible), half repeated text."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE fills (id INTEGER PRIMARY KEY, tenant TEXT, symbol TEXT, price REAL, qty REAL, note TEXT, blob BLOB)")
    batch = [("tenant-1", "BTC/USDT", 64000.5, 0.01, "filled by the market-maker agent " * 3, os.urandom(100)) for _ in range(2000)]
    while path.stat().st_size < megabytes * MB:
        connection.executemany("INSERT INTO fills (tenant, symbol, price, qty, note, blob) VALUES (?, ?, ?, ?, ?, ?)", batch)
        connection.commit()
        batch = [(t, s, p, q, n, os.urandom(100)) for t, s, p, q, n, _ in batch]
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()


def sqlite_bench(root: Path, megabytes: int) -> None:
    source = root / "live.db"
    make_sqlite(source, megabytes)
    size = source.stat().st_size
    keys = Keyring.parse("bench:" + base64.urlsafe_b64encode(os.urandom(32)).decode())
    print(f"\nSQLite, {size / MB:.0f} MB database")
    copy_time, _ = timed(lambda: shutil.copyfile(source, root / "copy.db"))
    snapshot_time, _ = timed(lambda: snapshot(source, root / "snapshot.db"))
    backup_time, made = timed(lambda: create(source, root / "backups", "bench", keys))
    restore_copy, _ = timed(lambda: shutil.copyfile(root / "copy.db", root / "copy-back.db"))
    restore_time, _ = timed(lambda: restore(made.path, root / "restored.db", keys))
    verify_time, _ = timed(lambda: verify(made.path, keys))
    print(line("baseline: file copy", size, copy_time))
    print(line("  of which: the backup API snapshot alone", size, snapshot_time, copy_time))
    print(line("backup: snapshot + zlib + AES-256-GCM", size, backup_time, copy_time))
    print(line("baseline: file copy back", size, restore_copy))
    print(line("restore: decrypt + decompress + tag check", size, restore_time, restore_copy))
    print(line("verify: restore to scratch + integrity_check", size, verify_time))
    print(f"  backup file {made.size / MB:.1f} MB ({made.size / size:.0%} of the database)")
    print(f"  RTO per GB (restore time / size, extrapolated linearly from {size / MB:.0f} MB): {restore_time / (size / GB):.1f} s/GB")


def as_postgres(*argv: str) -> str:
    return subprocess.run(list(argv), user=PG_USER, cwd="/", check=True, capture_output=True, text=True).stdout


def postgres_bench(root: Path, scale: int) -> None:
    entry = pwd.getpwnam(PG_USER)
    os.chown(root, entry.pw_uid, entry.pw_gid)
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    os.chown(sockets, entry.pw_uid, entry.pw_gid)
    port = free_port()
    pg = PgBackRest(
        stanza="bench",
        pg_data=data,
        repo_path=root / "repo",
        config_path=root / "pgbackrest" / "pgbackrest.conf",
        cipher_pass=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        pg_port=port,
        pg_socket_path=str(sockets),
        run_as=PG_USER,
    )
    pg.write_config()
    as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nport = {port}\nlisten_addresses = ''\nunix_socket_directories = '{sockets}'\nwal_level = replica\n"
            f"archive_mode = on\narchive_command = '{pg.archive_command}'\nmax_wal_size = 1GB\n"
        )
    ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w"]
    as_postgres(*ctl, "start")
    try:
        connect = ["-h", str(sockets), "-p", str(port), "-U", PG_USER]
        as_postgres(str(PG_BIN / "pgbench"), *connect, "-i", "-q", "-s", str(scale), "postgres")
        as_postgres(str(PG_BIN / "psql"), *connect, "-c", "CHECKPOINT", "postgres")
        size = int(as_postgres(str(PG_BIN / "psql"), *connect, "-At", "-c", "SELECT pg_database_size('postgres')", "postgres"))
        cluster = sum(path.stat().st_size for path in data.rglob("*") if path.is_file())
        print(f"\nPostgreSQL, pgbench scale {scale}: database {size / MB:.0f} MB, cluster directory {cluster / MB:.0f} MB")
        dump = root / "dump.fc"
        os.chown(root, entry.pw_uid, entry.pw_gid)
        dump_time, _ = timed(lambda: as_postgres(str(PG_BIN / "pg_dump"), *connect, "-Fc", "-f", str(dump), "postgres"))
        asyncio.run(pg.stanza_create())
        backup_time, _ = timed(lambda: asyncio.run(pg.backup("full")))
        as_postgres(str(PG_BIN / "createdb"), *connect, "restored")
        pg_restore_time, _ = timed(lambda: as_postgres(str(PG_BIN / "pg_restore"), *connect, "-d", "restored", str(dump)))
        target = root / "restored"
        other = free_port()

        async def restore_and_start() -> None:
            await pg.restore(target)
            await pg.start_cluster(target, other)

        restore_time, _ = timed(lambda: asyncio.run(restore_and_start()))
        asyncio.run(pg.stop_cluster(target))
        print(line("baseline: pg_dump -Fc (database size)", size, dump_time))
        print(line("backup: pgBackRest full, lz4 + aes-256-cbc", size, backup_time, dump_time))
        print(line("baseline: pg_restore into an empty database", size, pg_restore_time))
        print(line("restore: pgBackRest restore + start + promote", size, restore_time, pg_restore_time))
        print(f"  pg_dump file {dump.stat().st_size / MB:.1f} MB (pgbench rows compress very well; a dump holds no index)")
        print(
            f"  pgBackRest moves the whole cluster ({cluster / MB:.0f} MB, indexes and WAL included): backup "
            f"{cluster / MB / backup_time:.1f} MB/s, restore + start {cluster / MB / restore_time:.1f} MB/s of cluster"
        )
        print(
            f"  RTO per GB (restore + start + promote / database size, extrapolated linearly from {size / MB:.0f} MB): "
            f"{restore_time / (size / GB):.1f} s/GB; pg_restore: {pg_restore_time / (size / GB):.1f} s/GB"
        )
    finally:
        subprocess.run([*ctl[:3], "-m", "immediate", "stop"], user=PG_USER, cwd="/", check=False, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sqlite-mb", type=int, default=200)
    parser.add_argument("--pgbench-scale", type=int, default=20)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    print(machine())
    with scratch("bcf-backup-bench-") as root:
        sqlite_bench(root, args.sqlite_mb)
    if not args.skip_postgres:
        with scratch("bcf-backup-bench-pg-") as root:
            postgres_bench(root, args.pgbench_scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
