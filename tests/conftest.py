"""Shared fixtures: real PostgreSQL and Redis, each test with its own database or key prefix.

The kernel's own fixtures (``kernel_harness``) come from its pytest plugin, ``botcriptofy.testing``.
PostgreSQL and Redis are required, never skipped: a test that needs them fails when they are down.
Point the suite elsewhere with ``BCF_TEST_POSTGRES`` (a libpq URL of a superuser on the ``postgres``
database) and ``BCF_TEST_REDIS`` (a redis:// URL).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

POSTGRES_ADMIN_URL = os.environ.get("BCF_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BCF_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@pytest.fixture
async def make_postgres_database() -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Return a factory of fresh, empty PostgreSQL databases (libpq URLs); each is dropped after the test."""
    created: list[str] = []

    async def make() -> str:
        name = f"bcf_test_{uuid.uuid4().hex[:16]}"
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        created.append(name)
        return _with_database(POSTGRES_ADMIN_URL, name)

    yield make
    if created:
        connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            for name in created:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


@pytest.fixture
async def postgres_url(make_postgres_database: Callable[[], Awaitable[str]]) -> str:
    """A fresh PostgreSQL database as a libpq URL (``postgresql://...``)."""
    return await make_postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, make_postgres_database: Callable[[], Awaitable[str]]
) -> str:
    """A fresh database as an SQLAlchemy async URL; tests using it run once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    url = await make_postgres_database()
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"bcf-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def redis_url() -> str:
    """The Redis server's URL (pair it with ``redis_prefix``)."""
    return REDIS_URL


PLUGIN_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{dist}"
version = "{version}"
requires-python = ">=3.11"
dependencies = ["{kernel_requirement}"]

[project.entry-points.botcriptofy]
{name} = "{package}"

[tool.hatch.build.targets.wheel]
packages = ["src/{package}"]
"""


@pytest.fixture
def install_plugin(tmp_path: Path) -> Iterator[Callable[..., tuple[str, str]]]:
    """Build a plugin distribution from module source in a temporary directory and pip-install it.

    Returns ``install(name, source, version=..., kernel_requirement=...) -> (distribution, plugin name)``;
    the name gets a unique suffix. Every distribution is uninstalled after the test. Tests using it
    change the environment that every kernel discovers plugins from, so they hold a lock shared by
    all pytest-xdist workers and run one at a time.
    """
    lock = open(Path(sys.prefix) / ".botcriptofy-test-site-packages.lock", "w")  # noqa: SIM115 - held for the whole test
    fcntl.flock(lock, fcntl.LOCK_EX)
    installed: list[str] = []

    def install(name: str, source: str, *, version: str = "1.0.0", kernel_requirement: str = "botcriptofy>=0.1,<0.2") -> tuple[str, str]:
        unique = f"{name}_{uuid.uuid4().hex[:8]}"
        dist = f"bcf-test-{unique.replace('_', '-')}"
        package = f"bcf_test_{unique}"
        root = tmp_path / dist
        (root / "src" / package).mkdir(parents=True)
        (root / "pyproject.toml").write_text(
            PLUGIN_PYPROJECT.format(dist=dist, version=version, kernel_requirement=kernel_requirement, name=unique, package=package)
        )
        (root / "src" / package / "__init__.py").write_text(source.replace("{name}", unique))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--disable-pip-version-check",
                str(root),
            ],
            check=True,
            capture_output=True,
        )
        installed.append(dist)
        return dist, unique

    try:
        yield install
    finally:
        for dist in installed:
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", dist], check=False, capture_output=True)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
