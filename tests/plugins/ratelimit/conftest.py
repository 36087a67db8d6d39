"""Fixtures of the ratelimit plugin's tests: test plugins, a kernel with the plugin, a private Redis server."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import botcriptofy_ratelimit
from botcriptofy import Actor, Entitlements, ProblemError, Route, hookimpl
from botcriptofy._serve import KEEP_ALIVE

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Identity:
    """A test identity plugin: ``X-Tenant`` (and optional ``X-Plan``) name the caller; ``X-Bad`` is an invalid credential."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def actor_from_request(self, kernel: Any, request: Any) -> Actor | None:
        self.calls += 1
        if "x-bad" in request.headers:
            raise ProblemError(401, "Unauthorized", "The test credential is invalid.")
        tenant = request.headers.get("x-tenant")
        if tenant is None:
            return None
        attributes = {"plan": request.headers["x-plan"]} if "x-plan" in request.headers else {}
        return Actor(id=f"user-{tenant}", kind="user", tenant_id=tenant, attributes=attributes)


class Plans:
    """A test billing plugin: ``entitlements_for`` answers from a dict (tenants it does not know get None)."""

    def __init__(self, plans: dict[str, Entitlements]) -> None:
        self.plans = plans
        self.calls = 0

    @hookimpl
    async def entitlements_for(self, kernel: Any, tenant_id: str) -> Entitlements | None:
        self.calls += 1
        return self.plans.get(tenant_id)


class Routes:
    """Routes to limit: a plain one, an expensive one, one that needs credentials."""

    @hookimpl
    def register_routes(self, kernel: Any) -> list[Any]:
        async def thing(request: Any) -> dict[str, bool]:
            return {"ok": True}

        async def report(request: Any) -> dict[str, str]:
            return {"report": request.path_params["report_id"]}

        return [
            Route("/v1/thing", thing),
            Route("/v1/reports/{report_id}", report),
            Route("/v1/private", thing, authenticated=True),
        ]


class RedisServer:
    """A Redis server of the test's own, which the test may stop and start again (it keeps its data across that)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            # append-only file, fsync always: what was acknowledged survives the test's stop and start
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def settings_for(chosen: str, url: str, prefix: str, /, **overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"backend": chosen, "redis_url": url, "key_prefix": prefix}
    section.update(overrides)
    return {"ratelimit": section}


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test once with the in-memory backend and once with Redis."""
    return str(request.param)


@pytest.fixture
def limited(kernel_harness: Any, redis_url: str, redis_prefix: str) -> Callable[..., Awaitable[Any]]:
    """``await limited(backend, plugins={...}, **ratelimit_settings)``: a started kernel with the plugin and test plugins."""

    async def make(backend: str = "memory", *, plugins: dict[str, Any] | None = None, **overrides: Any) -> Any:
        chosen: dict[str, Any] = {"ratelimit": botcriptofy_ratelimit, "routes": Routes()}
        chosen.update(plugins or {})
        harness = await kernel_harness(plugins=chosen, settings=settings_for(backend, redis_url, redis_prefix, **overrides))
        # settings(**overrides): the whole settings mapping for harness.apply, with this test's backend and key prefix
        harness.settings = lambda **changed: settings_for(backend, redis_url, redis_prefix, **changed)
        return harness

    return make


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A running Redis server of this test's own on a free port; stopped after the test."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def identity() -> Identity:
    """A fresh test identity plugin (counts its calls)."""
    return Identity()


@pytest.fixture
def plans_plugin() -> type[Plans]:
    """The test billing plugin class: ``plans_plugin({tenant: Entitlements(...)})``."""
    return Plans


@pytest.fixture
def unused_port() -> Callable[[], int]:
    """Return a function that finds a free TCP port on 127.0.0.1."""
    return free_port


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Any], Awaitable[int]]]:
    """``port = await serve(harness)``: serve a harness's runtime with uvicorn on a free loopback port (stopped afterwards)."""
    import uvicorn

    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(harness: Any) -> int:
        port = free_port()
        config = uvicorn.Config(
            harness.runtime,
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_level="warning",
            http="h11",
            ws="none",
            access_log=False,
            timeout_keep_alive=KEEP_ALIVE,  # as `serve`: above httpx's own 5 s, so an idle client never races the close
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        running.append((server, task))
        deadline = time.monotonic() + 10
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            await asyncio.sleep(0.02)
        return port

    yield start
    for server, task in running:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
