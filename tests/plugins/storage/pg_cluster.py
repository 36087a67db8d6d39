"""A throwaway PostgreSQL 15 cluster on a free loopback port, for tests and benches that stop and start the server.

The shared server on 5432 must never be stopped; this one lives in a temporary directory owned by the
``postgres`` OS user (``initdb`` refuses to run as root) and is removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN = Path(os.environ.get("BCF_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayCluster:
    """``initdb`` in a temporary directory; ``start()`` / ``stop()`` / ``remove()``; ``url`` for the ``postgres`` database."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="bcf-pg-", dir="/tmp"))
        shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.port = free_port()
        self._as_postgres(BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: object) -> None:
        done = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, command)], capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40"
        self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-w", "-t", "30", "-l", self.directory / "log", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-w", "-t", "30", "-m", mode, "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)
