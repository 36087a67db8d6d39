"""PostgreSQL backups with pgBackRest: the plugin writes its configuration and runs its commands.

pgBackRest does the work -- full, differential and incremental backups, WAL archiving through
``archive_command`` (``archive-push``), encryption of the repository, retention (``expire``),
``check``, ``verify`` and restore to a directory or a point in time. This module only renders the
configuration and calls the ``pgbackrest`` binary, as the operating-system user that owns the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PgBackRestError(Exception):
    """A pgBackRest (or pg_ctl) command failed; the message holds the command and its error output."""


@dataclass
class PgBackRest:
    stanza: str
    pg_data: Path
    repo_path: Path
    config_path: Path
    cipher_pass: str | Callable[[], str]
    pg_port: int = 5432
    pg_socket_path: str = "/var/run/postgresql"
    pg_user: str = "postgres"
    pg_database: str = "postgres"
    run_as: str = ""
    retention_full: int = 2
    retention_diff: int = 7
    compress_type: str = "lz4"
    process_max: int = 2
    archive_timeout: float = 60.0
    binary: str = "pgbackrest"
    pg_bin: Path = PG_BIN
    extra_env: dict[str, str] = field(default_factory=dict)

    # -- configuration ---------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.config_path.parent

    def render(self) -> str:
        lines = [
            "# Written by the BotCriptoFy backup plugin; it is rewritten on every run. Mode 0600: it holds the repository key.",
            "[global]",
            f"repo1-path={self.repo_path}",
            "repo1-cipher-type=aes-256-cbc",
            f"repo1-cipher-pass={self.cipher_pass() if callable(self.cipher_pass) else self.cipher_pass}",
            f"repo1-retention-full={self.retention_full}",
            f"repo1-retention-diff={self.retention_diff}",
            f"compress-type={self.compress_type}",
            f"process-max={self.process_max}",
            f"archive-timeout={int(self.archive_timeout)}",
            "start-fast=y",
            f"lock-path={self.home / 'lock'}",
            f"log-path={self.home / 'log'}",
            "log-level-console=warn",
            "log-level-stderr=error",
            "log-level-file=info",
            "",
            f"[{self.stanza}]",
            f"pg1-path={self.pg_data}",
            f"pg1-port={self.pg_port}",
            f"pg1-socket-path={self.pg_socket_path}",
            f"pg1-user={self.pg_user}",
            f"pg1-database={self.pg_database}",
            "",
        ]
        return "\n".join(lines)

    def _owner(self) -> tuple[int, int] | None:
        if not self.run_as or os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(self.run_as)
        except KeyError:
            raise PgBackRestError(f"backup.pg_run_as: there is no operating-system user '{self.run_as}'") from None
        return entry.pw_uid, entry.pw_gid

    def _own(self, path: Path) -> None:
        owner = self._owner()
        if owner is not None:
            os.chown(path, *owner)

    def write_config(self) -> Path:
        """Write the configuration (0600, owned by the cluster's user) and the directories pgBackRest uses."""
        for directory in (self.home, self.home / "lock", self.home / "log", self.repo_path):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._own(directory)
        partial = self.config_path.with_name(self.config_path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.render())
        self._own(partial)
        partial.rename(self.config_path)
        return self.config_path

    @property
    def archive_command(self) -> str:
        """The ``archive_command`` the cluster must run: pgBackRest's ``archive-push`` for this stanza."""
        return f"{self.binary} --config={self.config_path} --stanza={self.stanza} archive-push %p"

    # -- running ---------------------------------------------------------------------------

    async def _exec(self, *argv: str, timeout: float = 3600) -> str:  # noqa: ASYNC109 - a subprocess deadline
        kwargs: dict[str, Any] = {}
        if self._owner() is not None:
            kwargs["user"] = self.run_as
            kwargs["cwd"] = "/"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **self.extra_env}
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, **kwargs
        )
        try:
            async with asyncio.timeout(timeout):
                out, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise PgBackRestError(f"{' '.join(argv[:3])}: no answer within {timeout:.0f} s") from None
        if process.returncode != 0:
            detail = (err or out).decode(errors="replace").strip().splitlines()
            raise PgBackRestError(
                f"{' '.join(a for a in argv if not a.startswith('--config'))} exited {process.returncode}: {' '.join(detail[-5:])}"
            )
        return out.decode(errors="replace")

    async def run(self, command: str, *options: str, timeout: float = 3600) -> str:  # noqa: ASYNC109
        self.write_config()
        return await self._exec(self.binary, f"--config={self.config_path}", f"--stanza={self.stanza}", *options, command, timeout=timeout)

    async def stanza_create(self) -> None:
        await self.run("stanza-create")

    async def check(self) -> None:
        """pgBackRest ``check``: the configuration, the repository, and that a switched WAL segment arrives through archive_command."""
        await self.run("check")

    async def backup(self, kind: str) -> dict[str, Any]:
        if kind not in ("full", "diff", "incr"):
            raise ValueError(f"backup type must be full, diff or incr, not {kind!r}")
        await self.run("backup", f"--type={kind}")
        return (await self.backups())[0]

    async def info(self) -> dict[str, Any]:
        self.write_config()
        out = await self._exec(self.binary, f"--config={self.config_path}", f"--stanza={self.stanza}", "--output=json", "info")
        stanzas = json.loads(out)
        return stanzas[0] if stanzas else {}

    async def backups(self) -> list[dict[str, Any]]:
        """Backups in the repository, newest first, as the API and CLI show them."""
        info = await self.info()
        found = []
        for item in info.get("backup", []):
            found.append(
                {
                    "id": item["label"],
                    "database": self.stanza,
                    "engine": "postgresql",
                    "type": item["type"],
                    "created_at": datetime.fromtimestamp(item["timestamp"]["stop"], UTC).isoformat(),
                    "started_at": datetime.fromtimestamp(item["timestamp"]["start"], UTC).isoformat(),
                    "size_bytes": item.get("info", {}).get("repository", {}).get("delta"),
                    "source_bytes": item.get("info", {}).get("size"),
                    "wal_start": item.get("archive", {}).get("start"),
                    "wal_stop": item.get("archive", {}).get("stop"),
                    "prior": item.get("prior"),
                }
            )
        found.sort(key=lambda entry: entry["created_at"], reverse=True)
        return found

    async def verify(self) -> dict[str, Any]:
        """pgBackRest ``verify``: every backup file and archived WAL segment of the repository is read back and checked."""
        out = await self.run("verify", "--output=text", "--verbose")
        if "error" in out.lower() and "errors=0" not in out.replace(" ", "").lower():
            raise PgBackRestError(f"pgbackrest verify reported errors: {out.strip()[-1000:]}")
        return {"database": self.stanza, "valid": True, "report": out.strip()[-4000:]}

    def prepare(self, target: Path) -> None:
        """Create the empty restore directory, owned by the cluster's user; refuse a directory with files."""
        if target.exists() and any(target.iterdir()):
            raise PgBackRestError(f"{target}: the restore target is not empty")
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        target.chmod(0o700)
        self._own(target)

    def _sockets(self, data: Path) -> Path:
        sockets = data / "socket"
        sockets.mkdir(exist_ok=True, mode=0o700)
        self._own(sockets)
        return sockets

    async def restore(self, target: Path, *, kind: str = "default", target_time: datetime | None = None, label: str | None = None) -> None:
        """Restore into the empty directory ``target``: the end of the archive (``default``), a time, or a backup's end (``immediate``)."""
        self.prepare(target)
        options = [f"--pg1-path={target}"]
        if kind == "time":
            if target_time is None:
                raise ValueError("a point-in-time restore needs target_time")
            stamp = target_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
            options += ["--type=time", f"--target={stamp}", "--target-action=promote"]
        elif kind == "immediate":
            options += ["--type=immediate", "--target-action=promote"]
        elif kind != "default":
            raise ValueError(f"restore type must be default, time or immediate, not {kind!r}")
        if label:
            options.append(f"--set={label}")
        await self.run("restore", *options)

    # -- a restored cluster ------------------------------------------------------------------

    async def start_cluster(self, data: Path, port: int, *, timeout: float = 300) -> None:  # noqa: ASYNC109
        """Start the restored cluster at ``data`` on ``port`` without archiving (never into the repository); wait for promotion."""
        sockets = self._sockets(data)
        options = f"-c port={port} -c listen_addresses='' -c unix_socket_directories='{sockets}' -c archive_mode=off"
        await self._exec(
            str(self.pg_bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(data / "drill.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 30,
        )
        deadline = time.monotonic() + timeout
        while True:
            out = await self.psql(sockets, port, "SELECT pg_is_in_recovery()")
            if out.strip() == "f":
                return
            if time.monotonic() > deadline:
                raise PgBackRestError(f"{data}: the restored cluster is still recovering after {timeout:.0f} s")
            await asyncio.sleep(0.1)

    async def stop_cluster(self, data: Path) -> None:
        with contextlib.suppress(PgBackRestError):
            await self._exec(str(self.pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop", timeout=120)

    async def psql(self, host: Path | str, port: int, sql: str, database: str | None = None) -> str:
        return await self._exec(
            str(self.pg_bin / "psql"),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(host),
            "-p",
            str(port),
            "-U",
            self.pg_user,
            "-d",
            database or self.pg_database,
            "-c",
            sql,
            timeout=300,
        )

    async def table_counts(self, host: Path | str, port: int, database: str | None = None) -> dict[str, int]:
        """Exact row count of every user table of ``database``, as ``schema.table``."""
        listed = await self.psql(
            host,
            port,
            "SELECT quote_ident(schemaname) || '.' || quote_ident(relname) FROM pg_stat_user_tables ORDER BY 1",
            database,
        )
        tables = [line for line in listed.splitlines() if line]
        if not tables:
            return {}
        query = " UNION ALL ".join(f"SELECT '{table.replace(chr(39), chr(39) * 2)}', count(*) FROM {table}" for table in tables)
        out = await self.psql(host, port, query, database)
        counts = {}
        for line in out.splitlines():
            if line:
                name, _, count = line.rpartition("|")
                counts[name] = int(count)
        return counts

    def remove(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
