"""Pytest fixtures for plugin authors: a fresh kernel, an HTTP client, a test plugin for one test.

Installed as a pytest plugin with the kernel. Async fixtures need ``pytest-asyncio``::

    async def test_hello(kernel_harness):
        harness = await kernel_harness(plugins={"hello": HelloPlugin()})
        response = await harness.client.get("/hello")
        assert response.status_code == 200
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import tomlkit

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover - plugin authors without pytest-asyncio get plain fixtures
    async_fixture = pytest.fixture  # type: ignore[assignment]

from ._kernel import ApplyResult, Kernel, Runtime


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
