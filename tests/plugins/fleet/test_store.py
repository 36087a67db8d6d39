"""The fleet plugin in one process: several runtimes ("hosts") sharing one PostgreSQL database."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

import botcriptofy_fleet
from botcriptofy import PluginSettings, Runtime, SettingsSchema, hookimpl
from botcriptofy.testing import wait_until
from botcriptofy_fleet._metrics import FleetCollector
from botcriptofy_fleet._state import state

SECRET = "s3cr3t-never-shared"


class VaultSettings(PluginSettings):
    api_token: SecretStr = SecretStr("")
    label: str = "vault"


class Vault:
    """A plugin with a secret setting."""

    @hookimpl
    def plugin_settings_schema(self) -> SettingsSchema:
        return SettingsSchema(VaultSettings, live=frozenset({"api_token", "label"}))


def shared(database: str, *, title: str = "fleet", label: str = "vault", fleet: str = "") -> str:
    return (
        f"[default.kernel]\ntitle = '{title}'\n\n[default.vault]\nlabel = '{label}'\n\n"
        f"[default.fleet]\nenabled = true\ndatabase_url = '{database}'\nreconcile_interval = 0.2\nheartbeat_timeout = 3\n{fleet}"
    )


class Host:
    def __init__(self, runtime: Runtime, directory: Path) -> None:
        self.runtime = runtime
        self.settings_dir = directory
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime), base_url="http://testserver")

    @property
    def version(self) -> int | None:
        assert self.runtime.current is not None
        return self.runtime.current.config_version


HostFactory = Callable[..., Awaitable[Host]]


@pytest.fixture
async def make_host(tmp_path: Path) -> AsyncIterator[HostFactory]:
    made: list[Host] = []

    async def make(name: str, settings: str, *, secrets: str = "", plugins: dict[str, Any] | None = None) -> Host:
        directory = tmp_path / name / "settings"
        directory.mkdir(parents=True)
        (directory / "settings.toml").write_text(settings)
        local = f"[default.kernel]\nstate_dir = '{tmp_path / name / 'state'}'\n\n[default.fleet]\nhost = '{name}'\n"
        (directory / "settings.local.toml").write_text(local)
        if secrets:
            (directory / ".secrets.toml").write_text(secrets)
        everything = {"fleet": botcriptofy_fleet, "vault": Vault(), **(plugins or {})}
        runtime = Runtime(directory, env="testing", plugins=everything, discover=False, watch=True)
        await runtime.start()
        host = Host(runtime, directory)
        made.append(host)
        return host

    yield make
    for host in reversed(made):
        await host.client.aclose()
        await host.runtime.stop()


async def test_fleet_mode_needs_postgresql(make_host: HostFactory, tmp_path: Path) -> None:
    host = await make_host("x", "[default.fleet]\nenabled = true\n")
    assert host.runtime.store is None
    ready = await host.client.get("/-/ready")
    assert ready.status_code == 503
    assert "fleet mode needs PostgreSQL: storage.url is empty (SQLite)" in ready.json()["checks"]["fleet.started"]["error"]
    answer = await host.client.get("/v1/admin/fleet")
    assert answer.status_code == 404 and "single-host mode" in answer.json()["detail"]


async def test_single_host_mode_apply_writes_the_files(make_host: HostFactory) -> None:
    host = await make_host("x", "[default.kernel]\ntitle = 'one'\n")
    before = host.version
    answer = await host.client.post("/v1/admin/config/apply", json={"files": {"settings.toml": "[default.kernel]\ntitle = 'two'\n"}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["applied"] and answer.json()["version"] == before + 1
    assert host.runtime.current.config.kernel.title == "two"
    assert "two" in (host.settings_dir / "settings.toml").read_text()
    refused = await host.client.post("/v1/admin/config/apply", json={"files": {"settings.toml": "[default.kernel]\ntitel = 'x'\n"}})
    assert refused.status_code == 422 and "kernel.titel" in refused.text
    assert refused.json()["errors"][0]["field"] == "files"
    assert host.runtime.current.config.kernel.title == "two"
    # Valid but refused while applying (read by the HTTP server at start only): the file goes back to what runs.
    restart_only = "[default.kernel]\ntitle = 'three'\ntrusted_proxies = ['10.0.0.1']\n"
    refused = await host.client.post("/v1/admin/config/apply", json={"files": {"settings.toml": restart_only}})
    assert refused.status_code == 422 and "kernel.trusted_proxies" in refused.text
    assert (host.settings_dir / "settings.toml").read_text() == "[default.kernel]\ntitle = 'two'\n"
    assert (await host.client.get("/v1/admin/fleet")).status_code == 404


async def test_versions_reach_every_host_and_secrets_stay_home(
    make_host: HostFactory, postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BOTCRIPTOFY_VAULT__LABEL", "from-env-not-shared")
    x = await make_host("x", shared(postgres_url), secrets=f"[default.vault]\napi_token = '{SECRET}'\n")
    monkeypatch.delenv("BOTCRIPTOFY_VAULT__LABEL")
    y = await make_host("y", shared(postgres_url, title="y-local-edit"))
    assert x.version == y.version == 1  # the first host's files became version 1; y applied it before serving
    assert y.runtime.current.config.kernel.title == "fleet"
    assert x.runtime.current.settings_for("vault").api_token.get_secret_value() == SECRET

    result = await x.runtime.apply_files({"settings.toml": shared(postgres_url, title="two")}, source="test", actor="tester")
    assert result.applied and result.version == 2
    await wait_until(lambda: y.version == 2, timeout=2)
    assert y.runtime.current.config.kernel.title == "two"

    history = (await y.client.get("/v1/admin/config/history")).json()
    assert [v["version"] for v in history] == [2, 1]
    assert history[0]["actor"] == "tester" and history[0]["source"] == "test"
    connection = await asyncpg.connect(postgres_url)
    try:
        rows = [dict(row) for row in await connection.fetch("SELECT * FROM botcriptofy_fleet_versions")]
        workers = [dict(row) for row in await connection.fetch("SELECT * FROM botcriptofy_fleet_workers")]
    finally:
        await connection.close()
    stored = json.dumps(rows + workers, default=str)
    assert SECRET not in stored and "from-env-not-shared" not in stored
    assert "state_dir" not in json.dumps(rows, default=str) and str(tmp_path) not in stored  # settings.local.toml stays home
    assert all(set(json.loads(row["files"])) == {"settings.toml"} for row in rows)

    # Rolling back makes a new version with the old files; the diff says what changed.
    result = await y.runtime.rollback(1, source="test", actor="tester")
    assert result.version == 3
    await wait_until(lambda: x.version == 3 and x.runtime.current.config.kernel.title == "fleet", timeout=2)
    latest = (await x.client.get("/v1/admin/config/history")).json()[0]
    assert latest["note"] == "rollback to version 1"
    assert latest["diff"] == {"settings.toml.default.kernel.title": {"from": "two", "to": "fleet"}}
    missing = await x.client.post("/v1/admin/config/rollback", json={"version": 99})
    assert missing.status_code == 404


async def test_a_missed_notification_is_reconciled_and_a_lost_listener_reconnects(
    make_host: HostFactory, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    x = await make_host("x", shared(postgres_url))
    store = x.runtime.store
    assert store is not None
    connection = await asyncpg.connect(postgres_url)
    try:
        # A version written without NOTIFY (as if the notification was lost): the periodic reconcile applies it.
        await connection.execute(
            "INSERT INTO botcriptofy_fleet_versions (source, actor, note, files, settings, diff) "
            "VALUES ('test', '', '', $1::jsonb, '{}', '{}')",
            json.dumps({"settings.toml": shared(postgres_url, title="silent")}),
        )
        await wait_until(lambda: x.version == 2, timeout=3)
        assert x.runtime.current.config.kernel.title == "silent"

        # The LISTEN connection dies: the host notices, reconnects, reconciles, and is ready again.
        with caplog.at_level(logging.WARNING, logger="botcriptofy.fleet"):
            killed = await connection.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'botcriptofy-fleet-listen' AND datname = current_database()"
            )
            assert killed == 1
            await wait_until(lambda: not store.listening, timeout=3)
            assert not store.synced
            await wait_until(lambda: store.listening, timeout=5)
        assert "LISTEN connection to PostgreSQL is down" in caplog.text
    finally:
        await connection.close()
    await wait_until(lambda: store.synced, timeout=3)  # reconciled after the reconnect, then ready again
    assert (await x.client.get("/-/ready")).status_code == 200


async def test_status_and_metrics(make_host: HostFactory, postgres_url: str) -> None:
    x = await make_host("x", shared(postgres_url))
    await x.runtime.apply_files({"settings.toml": shared(postgres_url, title="two")}, source="test")

    async def reported() -> bool:
        status = (await x.client.get("/v1/admin/fleet")).json()
        return bool(status["hosts"]) and status["hosts"][0]["config_versions"] == [2]

    await wait_until(reported, timeout=3)
    status = (await x.client.get("/v1/admin/fleet")).json()
    assert status["current_version"] == 2 and status["heartbeat_timeout"] == 3
    worker = status["hosts"][0]["workers"][0]
    assert worker["plugins"]["fleet"]["running"] == worker["plugins"]["fleet"]["installed"]
    assert worker["restart_pending"] == [] and worker["ready"] is True
    assert status["hosts"][0]["in_sync"] is True
    collector = FleetCollector(state(x.runtime.current))
    values = {family.name: family.samples[0].value for family in collector.collect()}
    assert values["botcriptofy_fleet_config_version"] == 2
    assert values["botcriptofy_fleet_config_drift"] == 0
    assert values["botcriptofy_fleet_store_connected"] == 1


async def test_a_restarted_fleet_plugin_keeps_the_host_in_the_fleet(make_host: HostFactory, postgres_url: str) -> None:
    x = await make_host("x", shared(postgres_url))
    y = await make_host("y", shared(postgres_url))
    first = x.runtime.store
    # settings.local.toml is this host's own file: it applies live, and a new host name restarts the plugin.
    local = x.settings_dir / "settings.local.toml"
    local.write_text(local.read_text().replace("host = 'x'", "host = 'x2'"))
    await wait_until(lambda: x.runtime.store is not None and x.runtime.store is not first, timeout=5)
    await wait_until(lambda: first._pool is None, timeout=5)  # the old generation closed its own store only
    assert x.runtime.store.listening or await wait_until(lambda: x.runtime.store.listening, timeout=3)
    result = await y.runtime.apply_files({"settings.toml": shared(postgres_url, title="after-restart")}, source="test")
    await wait_until(lambda: x.version == result.version, timeout=3)

    async def renamed() -> bool:
        hosts = {host["host"] for host in (await y.client.get("/v1/admin/fleet")).json()["hosts"]}
        return "x2" in hosts and "x" not in hosts

    await wait_until(renamed, timeout=5)
