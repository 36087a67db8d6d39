"""Backup fixtures: a PostgreSQL 15 cluster of the test's own (initdb, own port, archive_command set), keys in the environment.

The cluster runs as the ``postgres`` operating-system user (PostgreSQL refuses root), in a directory
under /tmp that user can reach; the shared server at 5432 is never touched.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from botcriptofy import Actor, Notification, hookimpl
from botcriptofy_backup._pgbackrest import PG_BIN, PgBackRest, free_port

PG_USER = "postgres"


def key_entry(key_id: str, fill: int) -> str:
    return f"{key_id}:{base64.urlsafe_b64encode(bytes([fill]) * 32).decode()}"


@pytest.fixture
def backup_keys(monkeypatch: pytest.MonkeyPatch) -> str:
    value = key_entry("k1", 1)
    monkeypatch.setenv("BCF_BACKUP_KEYS", value)
    monkeypatch.setenv("BCF_BACKUP_PG_CIPHER_PASS", "test-repository-passphrase-0123456789")
    return value


def _as_postgres(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), user=PG_USER, cwd="/", check=True, capture_output=True, text=True, timeout=120)


@dataclass
class Cluster:
    root: Path
    data: Path
    port: int
    sockets: Path
    stanza: str

    @property
    def socket(self) -> str:
        return str(self.sockets)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return _as_postgres(
            str(PG_BIN / "psql"),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            self.socket,
            "-p",
            str(self.port),
            "-d",
            database,
            "-c",
            sql,
        ).stdout.strip()

    def start(self) -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        """Immediate shutdown (SIGQUIT) of a cluster still running; a killed one has nothing to stop."""
        pid = self.postmaster_pid()
        if pid is None or not _ours(pid, self.data):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while _state(pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.02)

    def postmaster_pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        return int(pidfile.read_text().splitlines()[0]) if pidfile.exists() else None

    def kill(self) -> None:
        """SIGKILL the postmaster and each of its children, by process id: the host dies without a shutdown."""
        pid = self.postmaster_pid()
        assert pid is not None
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(fields[1]) == pid:
                        children.append(int(entry.name))
        os.kill(pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and "Z" not in _state(p) for p in [pid, *children]):
            time.sleep(0.05)


def _ours(pid: int, data: Path) -> bool:
    """Whether ``pid`` is still this cluster's postmaster (a killed cluster's pid may belong to someone else by now)."""
    try:
        return str(data) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") and _state(pid) != "Z"
    except OSError:
        return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def make_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="bcf-backup-", dir="/tmp"))
    entry = pwd.getpwnam(PG_USER)
    os.chown(root, entry.pw_uid, entry.pw_gid)
    return root


@pytest.fixture
def pg_root() -> Iterator[Path]:
    root = make_root()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def engine_for(root: Path, cluster_data: Path, port: int, sockets: Path, stanza: str, **extra: object) -> PgBackRest:
    return PgBackRest(
        stanza=stanza,
        pg_data=cluster_data,
        repo_path=root / "repo",
        config_path=root / "pgbackrest" / "pgbackrest.conf",
        cipher_pass="test-repository-passphrase-0123456789",
        pg_port=port,
        pg_socket_path=str(sockets),
        pg_user=PG_USER,
        run_as=PG_USER,
        archive_timeout=30,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
async def pg_cluster(pg_root: Path) -> AsyncIterator[Cluster]:
    """A fresh cluster archiving through pgBackRest (config at <root>/pgbackrest/pgbackrest.conf, repository <root>/repo)."""
    data, sockets = pg_root / "data", pg_root / "run"
    sockets.mkdir()
    entry = pwd.getpwnam(PG_USER)
    os.chown(sockets, entry.pw_uid, entry.pw_gid)
    port = free_port()
    stanza = "bcf"
    engine = engine_for(pg_root, data, port, sockets, stanza)
    engine.write_config()
    _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nport = {port}\nlisten_addresses = ''\nunix_socket_directories = '{sockets}'\n"
            f"wal_level = replica\narchive_mode = on\narchive_command = '{engine.archive_command}'\n"
            "max_wal_size = 64MB\nshared_buffers = 16MB\n"
        )
    cluster = Cluster(root=pg_root, data=data, port=port, sockets=sockets, stanza=stanza)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


class Identity:
    """Test identity: the caller holds the permissions named in ``x-probe-actor``."""

    @hookimpl
    def actor_from_request(self, kernel: Any, request: Any) -> Actor | None:
        held = request.headers.get("x-probe-actor")
        return Actor(id="user:ops", kind="user", permissions=frozenset(held.split(","))) if held else None


@dataclass
class Inbox:
    """Records the notifications the kernel hands to channels (no notifications plugin runs)."""

    received: list[Notification] = field(default_factory=list)

    @hookimpl
    def send_notification(self, kernel: Any, notification: Notification) -> None:
        self.received.append(notification)


def other_plugins(*keep: str) -> list[str]:
    """Every installed plugin except ``keep``, to switch off for a command-line run."""
    return sorted({entry.name for entry in entry_points(group="botcriptofy")} - set(keep))


def write_rows(path: Path, count: int, table: str = "trades") -> None:
    connection = sqlite3.connect(path)
    try:
        connection.execute(f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        connection.executemany(f"INSERT INTO {table} (payload) VALUES (?)", [("x" * 100,)] * count)
        connection.commit()
    finally:
        connection.close()
