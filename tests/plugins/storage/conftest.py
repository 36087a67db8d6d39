"""Fixtures for the storage plugin's tests: a kernel with storage and the sample plugin, on SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import botcriptofy_storage

from . import storage_sample

FAST_RELAY = {"relay_poll_interval": 0.05, "retry_base_delay": 0.05, "retry_max_delay": 0.2}


@pytest.fixture
def storage_kernel(database_url, kernel_harness) -> Callable[..., Awaitable[Any]]:
    """Return ``await storage_kernel(sample=..., **storage_settings)``: a started harness with storage and the sample plugin."""

    async def make(*, sample: Any = None, plugins: dict[str, Any] | None = None, url: str | None = None, **settings: Any) -> Any:
        chosen = {"storage": botcriptofy_storage, "sample": sample or storage_sample.SamplePlugin(), **(plugins or {})}
        return await kernel_harness(plugins=chosen, settings={"storage": {"url": url or database_url, **FAST_RELAY, **settings}})

    return make


@pytest.fixture
def throwaway_postgres():
    """A started PostgreSQL cluster of this test's own (on a free port) that the test may stop and start."""
    from .pg_cluster import ThrowawayCluster

    cluster = ThrowawayCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def storage_cli(monkeypatch, tmp_path):
    """``storage_cli(storage_settings, *args, plugins=None)``: run the botcriptofy command line over storage (+ sample by default)."""
    from click.testing import CliRunner

    from botcriptofy import Runtime, _cli
    from botcriptofy.testing import render_settings

    settings_dir = tmp_path / "cli-settings"
    settings_dir.mkdir()
    chosen: dict[str, Any] = {}
    monkeypatch.setattr(
        _cli.CliContext,
        "runtime",
        lambda self, watch=False: Runtime(self.settings_dir, env=self.env, plugins=chosen, discover=False, watch=False),
    )
    botcriptofy_storage.register_commands(cli=_cli.cli)
    runner = CliRunner()

    def run(storage: dict[str, Any], *args: str, plugins: dict[str, Any] | None = None, env: str | None = None, **sections: Any):
        chosen.clear()
        chosen.update(plugins if plugins is not None else {"storage": botcriptofy_storage, "sample": storage_sample.SamplePlugin()})
        rendered = render_settings({"storage": storage, **sections}, state_dir=tmp_path / "cli-state")
        (settings_dir / "settings.toml").write_text(rendered)
        options = ["--settings", str(settings_dir), *(["--env", env] if env else [])]
        # In a thread of its own: the command runs its own event loop, and async tests already run one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(runner.invoke, _cli.cli, [*options, *args], catch_exceptions=False).result()

    return run
