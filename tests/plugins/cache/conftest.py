"""Fixtures of the cache plugin's tests: cache instances on the shared Redis, and a Redis server of our own to stop."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from botcriptofy_cache import CacheService, CacheSettings

CacheFactory = Callable[..., Awaitable[CacheService]]


@pytest.fixture
async def make_cache(redis_url: str, redis_prefix: str) -> AsyncIterator[CacheFactory]:
    """``await make_cache(backend=..., **settings)``: a started cache under this test's Redis prefix; closed afterwards."""
    made: list[CacheService] = []

    async def make(**settings: Any) -> CacheService:
        settings.setdefault("redis_url", redis_url)
        settings.setdefault("prefix", redis_prefix)
        settings.setdefault("reconnect_interval", 0.2)
        settings.setdefault("redis_timeout", 2.0)  # a loaded CI machine must not look like an outage
        service = CacheService(CacheSettings(**settings))
        await service.start()
        made.append(service)
        return service

    yield make
    for service in reversed(made):
        await service.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of the test's own on a free port, with an append-only file fsynced on every write."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        executable = shutil.which("redis-server") or "/usr/bin/redis-server"
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - handed to the child process
        try:
            self.process = subprocess.Popen(
                [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                 "--appendfsync", "always", "--dir", str(self.directory), "--protected-mode", "no"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        client = aioredis.Redis.from_url(self.url)
        try:
            for _ in range(250):
                try:
                    if await client.ping():
                        return
                except Exception:
                    await asyncio.sleep(0.02)
            raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.directory / 'redis.log'}")
        finally:
            await client.aclose()

    async def kill(self) -> None:
        """Stop it the hard way (SIGKILL): only what was fsynced survives."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            await asyncio.to_thread(self.process.wait)
        self.process = None


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A started redis-server of this test's own (stop it with ``kill()``, start it again with ``start()``)."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    await server.start()
    yield server
    await server.kill()
