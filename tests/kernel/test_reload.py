"""Hot reload: plugins start, stop and reconfigure on settings changes; bad changes are refused."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import Field

from botcriptofy import PluginSettings, Route, SettingsSchema, hookimpl
from botcriptofy.testing import wait_until


class GreetingSettings(PluginSettings):
    greeting: str = "hello"
    workers: int = Field(1, ge=1)


class Greeter:
    """A test plugin that records its lifecycle calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def plugin_settings_schema(self) -> SettingsSchema:
        return SettingsSchema(GreetingSettings, live=frozenset({"greeting"}))

    @hookimpl
    async def startup(self, kernel):
        self.calls.append(f"startup:{kernel.generation}")

    @hookimpl
    def shutdown(self, kernel):
        self.calls.append(f"shutdown:{kernel.generation}")

    @hookimpl
    def settings_changed(self, kernel, previous, current, changed):
        self.calls.append(f"changed:{sorted(changed)}")

    @hookimpl
    def register_routes(self, kernel):
        async def greet(request):
            settings = kernel.settings_for("greeter")
            return {"greeting": settings.greeting, "generation": kernel.generation}

        return [Route("/greet", greet)]


async def test_disable_and_enable_plugin_changes_routes(kernel_harness):
    greeter = Greeter()
    harness = await kernel_harness(plugins={"greeter": greeter})
    assert (await harness.client.get("/greet")).json()["greeting"] == "hello"

    result = await harness.apply({"plugins": {"disabled": ["greeter"]}})
    assert result.applied and result.changes["stopped"] == ["greeter"]
    assert (await harness.client.get("/greet")).status_code == 404
    await wait_until(lambda: "shutdown:1" in greeter.calls)

    result = await harness.apply({})
    assert result.changes["started"] == ["greeter"]
    assert (await harness.client.get("/greet")).status_code == 200


async def test_live_key_reconfigures_and_other_key_restarts(kernel_harness):
    greeter = Greeter()
    harness = await kernel_harness(plugins={"greeter": greeter})
    result = await harness.apply({"greeter": {"greeting": "olá"}})
    assert result.changes["reconfigured"] == ["greeter"]
    assert greeter.calls == ["startup:1", "changed:['greeting']"]
    assert (await harness.client.get("/greet")).json() == {"greeting": "olá", "generation": 2}

    result = await harness.apply({"greeter": {"greeting": "olá", "workers": 3}})
    assert result.changes["restarted"] == ["greeter"]
    await wait_until(lambda: "shutdown:2" in greeter.calls)
    assert "startup:3" in greeter.calls


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[default.greeter\n", "invalid TOML"),
        ("[default.greeter]\nworkers = 'many'\n", "key 'greeter.workers'"),
        ("[default.greeter]\nworkers = 0\n", "greater than or equal to 1"),
        ("[default.greeter]\ngreting = 'typo'\n", "unknown setting"),
        ("[default.nosuchplugin]\nx = 1\n", "unknown plugin 'nosuchplugin'"),
        ("[default.plugins]\ndisabled = ['ghost']\n", "plugins.disabled[0]"),
        ("[default.plugins]\ndisabled = ['core']\n", "cannot be disabled"),
    ],
)
async def test_invalid_change_is_refused_and_running_config_kept(kernel_harness, text, expected):
    harness = await kernel_harness(plugins={"greeter": Greeter()})
    before = harness.kernel
    result = await harness.apply(text)
    assert not result.applied
    assert expected in result.error
    assert "settings.toml" in result.error or "environment variable" in result.error
    assert harness.kernel is before
    response = await harness.client.get("/greet")
    assert response.status_code == 200


async def test_watcher_applies_a_saved_change_within_a_second(kernel_harness):
    harness = await kernel_harness(plugins={"greeter": Greeter()}, watch=True)
    await asyncio.sleep(0.1)
    harness.write_settings({"greeter": {"greeting": "watched"}})
    waited = await wait_until(lambda: harness.kernel.settings_for("greeter").greeting == "watched", timeout=5)
    assert waited < 1.0


async def test_production_refuses_secrets_in_committed_settings_files(kernel_harness, monkeypatch):
    from pydantic import SecretStr

    class KeyedSettings(PluginSettings):
        api_key: SecretStr = SecretStr("")

    class Keyed:
        @hookimpl
        def plugin_settings_schema(self):
            return SettingsSchema(KeyedSettings)

    harness = await kernel_harness(plugins={"keyed": Keyed()}, env="production")
    result = await harness.apply({"keyed": {"api_key": "sk_live_123"}})
    assert not result.applied
    assert "key 'keyed.api_key'" in result.error and "BOTCRIPTOFY_KEYED__API_KEY" in result.error

    harness.write_settings({})
    (harness.settings_dir / ".secrets.toml").write_text("[default.keyed]\napi_key = 'sk_live_123'\n")
    result = await harness.runtime.reload()
    assert result.applied
    assert harness.kernel.settings_for("keyed").api_key.get_secret_value() == "sk_live_123"
    assert "sk_live_123" not in str((await harness.client.get("/v1/admin/config")).json())

    monkeypatch.setenv("BOTCRIPTOFY_KEYED__API_KEY", "sk_live_env")
    (harness.settings_dir / ".secrets.toml").unlink()
    result = await harness.runtime.reload()
    assert result.applied and harness.kernel.settings_for("keyed").api_key.get_secret_value() == "sk_live_env"


class Stuck:
    """A plugin whose shutdown never returns (a background loop that ignores its stop)."""

    def __init__(self) -> None:
        self.never = asyncio.Event()

    @hookimpl
    async def shutdown(self, kernel):
        await self.never.wait()


async def test_a_hanging_shutdown_is_abandoned_after_stop_timeout_and_the_others_still_stop(kernel_harness, caplog):
    greeter = Greeter()
    harness = await kernel_harness(plugins={"greeter": greeter, "stuck": Stuck()}, settings={"kernel": {"stop_timeout": 0.3}})
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(harness.runtime.stop(), 10)
    assert asyncio.get_running_loop().time() - started < 5
    assert "shutdown:1" in greeter.calls
    assert any("'stuck'" in r.getMessage() and "stop_timeout" in r.getMessage() for r in caplog.records), caplog.text
