"""A lost settings file and a changed backend address are never applied as a side effect."""

from __future__ import annotations

import pytest
from pydantic import Field

from botcriptofy import PluginSettings, Route, SettingsSchema, hookimpl
from botcriptofy._manager import discover, inspect_plugin
from botcriptofy.testing import wait_until


class BackendSettings(PluginSettings):
    url: str = "sqlite:///default.db"
    pool: int = Field(5, ge=1)
    greeting: str = "hello"


class Backend:
    """A test plugin with a backend address, like storage's url or the cache's Redis URL."""

    def __init__(self) -> None:
        self.started_with: list[str] = []

    @hookimpl
    def plugin_settings_schema(self) -> SettingsSchema:
        return SettingsSchema(BackendSettings, live=frozenset({"greeting"}), guarded=frozenset({"url"}))

    @hookimpl
    def startup(self, kernel):
        self.started_with.append(kernel.settings_for("backend").url)

    @hookimpl
    def register_routes(self, kernel):
        async def where(request):
            return {"url": kernel.settings_for("backend").url}

        return [Route("/where", where)]


SETTINGS = {"kernel": {"title": "Production title"}, "backend": {"url": "postgresql://db.internal/app"}}


@pytest.mark.parametrize("loss", ["deleted", "emptied", "only comments"])
async def test_a_lost_settings_file_is_refused_and_the_running_version_kept(kernel_harness, loss):
    backend = Backend()
    harness = await kernel_harness(plugins={"backend": backend}, settings=SETTINGS, watch=True)
    before = harness.kernel
    path = harness.settings_dir / "settings.toml"
    if loss == "deleted":
        path.unlink()
    else:
        path.write_text("" if loss == "emptied" else "# nothing here\n")
    await wait_until(lambda: harness.runtime.last_error is not None, timeout=5)
    error = harness.runtime.last_error
    assert str(path) in error
    assert ("missing" if loss == "deleted" else "empty") in error
    assert harness.kernel is before
    assert harness.kernel.config.kernel.title == "Production title"
    assert (await harness.client.get("/where")).json() == {"url": "postgresql://db.internal/app"}
    assert backend.started_with == ["postgresql://db.internal/app"]
    # Restoring the file is accepted again (nothing changed, so nothing is applied).
    harness.write_settings(SETTINGS)
    result = await harness.runtime.reload()
    assert result.error is None and harness.kernel is before


async def test_a_settings_file_may_still_be_created_from_an_empty_start(kernel_harness):
    harness = await kernel_harness(settings="")
    result = await harness.apply({"kernel": {"title": "first"}})
    assert result.applied
    (harness.settings_dir / "settings.local.toml").write_text("[default.kernel]\ntitle = 'local'\n")
    assert (await harness.runtime.reload()).applied
    (harness.settings_dir / "settings.local.toml").unlink()
    assert (await harness.runtime.reload()).applied
    assert harness.kernel.config.kernel.title == "first"


async def test_a_guarded_backend_address_is_refused_live_and_applied_at_restart(kernel_harness):
    from botcriptofy import Runtime

    backend = Backend()
    harness = await kernel_harness(plugins={"backend": backend}, settings=SETTINGS)
    before = harness.kernel
    result = await harness.apply({**SETTINGS, "backend": {"url": "sqlite:///elsewhere.db"}})
    assert not result.applied
    assert "key 'backend.url'" in result.error
    assert str(harness.settings_dir / "settings.toml") in result.error
    assert "botcriptofy restart" in result.error
    assert "elsewhere" not in result.error  # the address itself (it may hold a password) is not echoed
    assert harness.kernel is before
    assert backend.started_with == ["postgresql://db.internal/app"]

    # The same file also refuses when the key is removed (the default is another backend too).
    result = await harness.apply({"kernel": {"title": "Production title"}})
    assert not result.applied and "backend.url" in result.error

    # Other keys still change live while the address stays.
    result = await harness.apply({**SETTINGS, "backend": {"url": "postgresql://db.internal/app", "greeting": "olá"}})
    assert result.applied and result.changes["reconfigured"] == ["backend"]

    # A restart (a new runtime over the same directory) starts on the new address.
    harness.write_settings({**SETTINGS, "backend": {"url": "sqlite:///elsewhere.db"}})
    restarted = Runtime(harness.settings_dir, env="testing", plugins={"backend": backend}, discover=False, watch=False)
    await restarted.start()
    try:
        assert backend.started_with[-1] == "sqlite:///elsewhere.db"
    finally:
        await restarted.stop()


def test_guarded_keys_must_be_settings_and_never_live():
    class Bad:
        def __init__(self, schema):
            self.schema = schema

        @hookimpl
        def plugin_settings_schema(self):
            return self.schema

    unknown = inspect_plugin("bad", Bad(SettingsSchema(BackendSettings, guarded=frozenset({"adress"}))))
    assert "guarded keys that are not settings: adress" in unknown.error
    both = inspect_plugin("bad", Bad(SettingsSchema(BackendSettings, live=frozenset({"url"}), guarded=frozenset({"url"}))))
    assert "both live and guarded: url" in both.error


def test_first_party_backend_addresses_are_guarded():
    found = discover()
    assert found["storage"].guarded_keys == {"url"}
    assert found["cache"].guarded_keys == {"redis_url"}
    assert found["ratelimit"].guarded_keys == {"redis_url"}
