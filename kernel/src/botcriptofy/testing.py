"""Pytest fixtures for plugin authors: a fresh kernel, an HTTP client, a real server, real databases and Redis.

Installed as a pytest plugin with the kernel (``pip install botcriptofy[testing]`` brings what
they need). Async fixtures need ``pytest-asyncio``::

    async def test_hello(kernel_harness):
        harness = await kernel_harness(plugins={"hello": HelloPlugin()})
        response = await harness.client.get("/hello")
        assert response.status_code == 200

- ``kernel_harness``: a started runtime over a temporary settings directory, with an in-process client;
- ``live_server``: the same behind a real uvicorn server on a free loopback port (``server.url``);
- ``database_url`` (runs the test on SQLite and on PostgreSQL), ``postgres_url``, ``make_postgres_database``;
- ``redis_url`` and ``redis_prefix`` (a key prefix of the test's own, deleted afterwards);
- :class:`MemoryApprovals`, an approvals provider in memory, to test approval-gated actions without
  the workflows plugin and its Temporal server.

PostgreSQL and Redis are real servers, never skipped: point the fixtures at them with
``BCF_TEST_POSTGRES`` (a libpq URL of a role that may create databases, on the ``postgres``
database; default ``postgresql://postgres@127.0.0.1:5432/postgres``) and ``BCF_TEST_REDIS``
(default ``redis://127.0.0.1:6379/0``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import tomlkit

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover - plugin authors without pytest-asyncio get plain fixtures
    async_fixture = pytest.fixture  # type: ignore[assignment]

from ._app import Runtime
from ._errors import ProblemError
from ._kernel import Kernel
from ._markers import hookimpl
from ._runtime import ApplyResult
from ._serve import KEEP_ALIVE
from ._types import Actor, ApprovalRequest


def render_settings(settings: Mapping[str, Any], *, state_dir: Path | str | None = None) -> str:
    """Render a ``{section: {key: value}}`` mapping as a ``settings.toml`` under ``[default]``."""
    sections: dict[str, Any] = {name: dict(values) for name, values in settings.items()}
    if state_dir is not None:
        sections.setdefault("kernel", {}).setdefault("state_dir", str(state_dir))
    return tomlkit.dumps({"default": sections})


class KernelHarness:
    """A started :class:`Runtime` over a temporary settings directory, with an HTTP client."""

    def __init__(self, runtime: Runtime, directory: Path, state_dir: Path) -> None:
        import httpx

        self.runtime = runtime
        self.settings_dir = directory
        self.state_dir = state_dir
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime), base_url="http://testserver")

    @property
    def kernel(self) -> Kernel:
        """The generation serving requests now."""
        assert self.runtime.current is not None
        return self.runtime.current

    def write_settings(self, settings: Mapping[str, Any] | str) -> None:
        """Replace ``settings.toml`` (a mapping is rendered under ``[default]``)."""
        text = settings if isinstance(settings, str) else render_settings(settings, state_dir=self.state_dir)
        (self.settings_dir / "settings.toml").write_text(textwrap.dedent(text), encoding="utf-8")

    async def apply(self, settings: Mapping[str, Any] | str) -> ApplyResult:
        """Write the settings and apply them now, without waiting for the watcher."""
        self.write_settings(settings)
        return await self.runtime.reload(source="test")

    async def close(self) -> None:
        await self.client.aclose()
        await self.runtime.stop()


HarnessFactory = Callable[..., Awaitable[KernelHarness]]


@async_fixture
async def kernel_harness(tmp_path: Path) -> AsyncIterator[HarnessFactory]:
    """Return ``await kernel_harness(plugins=..., settings=..., discover=False, watch=False)``; every harness stops after the test."""
    made: list[KernelHarness] = []

    async def make(
        *,
        plugins: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | str | None = None,
        discover: bool = False,
        watch: bool = False,
        env: str = "testing",
    ) -> KernelHarness:
        directory = tmp_path / f"settings-{len(made)}"
        directory.mkdir()
        state_dir = tmp_path / f"state-{len(made)}"
        runtime = Runtime(directory, env=env, plugins=plugins, discover=discover, watch=watch)
        harness = KernelHarness(runtime, directory, state_dir)
        harness.write_settings(settings if settings is not None else {})
        await runtime.start()
        made.append(harness)
        return harness

    yield make
    for harness in reversed(made):
        await harness.close()


@async_fixture
async def kernel_client(kernel_harness: HarnessFactory) -> AsyncIterator[Any]:
    """An HTTP client over a kernel with only the built-in plugin."""
    harness = await kernel_harness()
    yield harness.client


async def wait_until(predicate: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.02) -> float:  # noqa: ASYNC109
    """Poll ``predicate`` (sync or async) until it is truthy; return the seconds waited or fail the test."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return loop.time() - started
        if loop.time() - started > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------------------------
# A real server
# ---------------------------------------------------------------------------------------------


class LiveServer:
    """A runtime served by uvicorn on a free loopback port, in the test's event loop."""

    def __init__(self, runtime: Runtime, server: Any, task: asyncio.Task[None], port: int, settings_dir: Path) -> None:
        self.runtime = runtime
        self.server = server
        self.task = task
        self.port = port
        self.host = "127.0.0.1"
        self.url = f"http://127.0.0.1:{port}"
        self.settings_dir = settings_dir

    @property
    def kernel(self) -> Kernel:
        assert self.runtime.current is not None
        return self.runtime.current

    async def close(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, timeout=10)


LiveServerFactory = Callable[..., Awaitable[LiveServer]]


@async_fixture
async def live_server(tmp_path: Path) -> AsyncIterator[LiveServerFactory]:
    """Return ``await live_server(plugins=..., settings=..., discover=False)``: a real uvicorn server; ``.url`` to call it."""
    import uvicorn

    class Server(uvicorn.Server):
        # The test runner owns the process's signals.
        def capture_signals(self) -> contextlib.nullcontext[None]:  # type: ignore[override]
            return contextlib.nullcontext()

    made: list[LiveServer] = []

    async def make(
        *,
        plugins: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | str | None = None,
        discover: bool = False,
        env: str = "testing",
    ) -> LiveServer:
        directory = tmp_path / f"server-settings-{len(made)}"
        directory.mkdir()
        state_dir = tmp_path / f"server-state-{len(made)}"
        text = settings if isinstance(settings, str) else render_settings(settings or {}, state_dir=state_dir)
        (directory / "settings.toml").write_text(textwrap.dedent(text), encoding="utf-8")
        runtime = Runtime(directory, env=env, plugins=plugins, discover=discover, watch=False)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            runtime, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE
        )
        server = Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        live = LiveServer(runtime, server, task, port, directory)
        made.append(live)
        await wait_until(lambda: server.started or task.done(), timeout=30)
        if task.done():
            task.result()
            pytest.fail("the server stopped during start-up")
        return live

    yield make
    for live in reversed(made):
        await live.close()


# ---------------------------------------------------------------------------------------------
# Real databases and Redis
# ---------------------------------------------------------------------------------------------


def postgres_admin_url() -> str:
    """The PostgreSQL server the fixtures create databases on (``BCF_TEST_POSTGRES``)."""
    return os.environ.get("BCF_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def redis_server_url() -> str:
    """The Redis server the fixtures use (``BCF_TEST_REDIS``)."""
    return os.environ.get("BCF_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@async_fixture
async def make_postgres_database() -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Return a factory of fresh, empty PostgreSQL databases (libpq URLs); each is dropped after the test."""
    import asyncpg  # type: ignore[import-untyped]

    admin = postgres_admin_url()
    created: list[str] = []

    async def make() -> str:
        name = f"bcf_test_{uuid.uuid4().hex[:16]}"
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        created.append(name)
        return _with_database(admin, name)

    yield make
    if created:
        connection = await asyncpg.connect(admin)
        try:
            for name in created:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


@async_fixture
async def postgres_url(make_postgres_database: Callable[[], Awaitable[str]]) -> str:
    """A fresh PostgreSQL database as a libpq URL (``postgresql://...``)."""
    return await make_postgres_database()


@async_fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path, make_postgres_database: Callable[[], Awaitable[str]]) -> str:
    """A fresh database as an SQLAlchemy async URL; tests using it run once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    url = await make_postgres_database()
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@async_fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    import redis.asyncio as aioredis

    prefix = f"bcf-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = aioredis.Redis.from_url(redis_server_url())
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The Redis server's URL (pair it with ``redis_prefix``)."""
    yield redis_server_url()


# ---------------------------------------------------------------------------------------------
# Approvals without Temporal
# ---------------------------------------------------------------------------------------------


class MemoryApprovals:
    """An approvals provider in memory, with the contract's answers (404, 403, 409; one decision wins).

    Register it as a plugin (``plugins={"approvals": MemoryApprovals()}``). Requests and outcomes are
    presented through ``present_approval`` as the workflows plugin does; an approved request runs the
    action of that name from ``register_approval_actions`` when one is registered, its result kept in
    ``results``. ``decisions`` lists ``(approval id, approved, actor id)``; :meth:`expire` ends a
    request as its timer would.
    """

    def __init__(self) -> None:
        self.kernel: Kernel | None = None
        self.requests: dict[str, ApprovalRequest] = {}
        self.decisions: list[tuple[str, bool, str]] = []
        self.results: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    @hookimpl
    def approvals(self, kernel: Kernel) -> MemoryApprovals:
        self.kernel = kernel
        return self

    async def _present(self, approval: ApprovalRequest) -> None:
        assert self.kernel is not None
        kernel = self.kernel.current()
        await kernel.broadcast("present_approval", kernel=kernel, approval=approval)

    async def request(
        self,
        *,
        action: str,
        summary: str,
        department: str,
        permission: str,
        requester: Actor,
        expires_in: float,
        payload: Mapping[str, Any] | None = None,
        tenant_id: str | None = None,
        destructive: bool = False,
    ) -> ApprovalRequest:
        now = datetime.now(UTC)
        approval = ApprovalRequest(
            id=str(uuid.uuid4()),
            action=action,
            summary=summary,
            department=department,
            permission=permission,
            requester=requester.id,
            expires_at=now + timedelta(seconds=expires_in),
            created_at=now,
            payload=dict(payload or {}),
            tenant_id=tenant_id,
            destructive=destructive,
        )
        self.requests[approval.id] = approval
        await self._present(approval)
        return approval

    async def decide(self, approval_id: str, *, approve: bool, actor: Actor, reason: str | None = None) -> ApprovalRequest:
        async with self._lock:
            approval = self.requests.get(approval_id)
            if approval is None:
                raise ProblemError(404, "Not found", "No such approval request.")
            if not actor.can(approval.permission):
                raise ProblemError(403, "Forbidden", f"Deciding needs the permission '{approval.permission}'.")
            if approval.status != "pending":
                raise ProblemError(409, "Already decided", f"The request is {approval.status}.")
            if approval.expires_at <= datetime.now(UTC):
                self.requests[approval_id] = dataclasses.replace(approval, status="expired")
                raise ProblemError(409, "Expired", "The request has expired.")
            approval = dataclasses.replace(
                approval, status="approved" if approve else "rejected", decided_by=actor.id, decided_at=datetime.now(UTC), reason=reason
            )
            self.requests[approval_id] = approval
            self.decisions.append((approval_id, approve, actor.id))
        if approve:
            assert self.kernel is not None
            kernel = self.kernel.current()
            found = await kernel.broadcast("register_approval_actions", kernel=kernel)
            actions = {action.name: action for listed in found.values() for action in listed or ()}
            if approval.action in actions:
                self.results[approval_id] = await actions[approval.action].execute(approval)
        await self._present(approval)
        return approval

    async def get(self, approval_id: str) -> ApprovalRequest | None:
        return self.requests.get(approval_id)

    async def expire(self, approval_id: str) -> ApprovalRequest:
        """End a pending request as its expiry timer would."""
        approval = dataclasses.replace(self.requests[approval_id], status="expired")
        self.requests[approval_id] = approval
        await self._present(approval)
        return approval
