"""A plugin that fails to start: not ready at boot (retried), refused alone at rescan, the real cause named."""

from __future__ import annotations

import logging

from botcriptofy import PluginError, PluginSettings, Route, SettingsSchema, hookimpl
from botcriptofy.testing import wait_until

FAST_RETRY = {"kernel": {"start_retry_initial": 0.05, "start_retry_max": 0.2}}


class DeadlockError(Exception):
    """Stands for a database driver's error."""


class Flaky:
    """Fails to start ``failures`` times, the way a plugin meets a database deadlock at boot."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0

    @hookimpl
    def startup(self, kernel):
        self.attempts += 1
        if self.attempts <= self.failures:
            try:
                raise DeadlockError("deadlock detected while enabling row-level security")
            except DeadlockError as error:
                # A plugin that guesses the reason: the kernel adds the real one.
                raise PluginError("flaky", "cannot prepare the database: check the role's permissions") from error

    @hookimpl
    def register_routes(self, kernel):
        async def answer(request):
            return {"ok": True}

        return [Route("/flaky", answer)]


async def test_a_plugin_refused_at_boot_makes_the_worker_not_ready_until_a_retry_starts_it(kernel_harness):
    flaky = Flaky(failures=3)
    harness = await kernel_harness(plugins={"flaky": flaky}, settings=FAST_RETRY)
    first = harness.kernel
    assert "flaky" not in first.plugins
    response = await harness.client.get("/-/ready")
    if response.status_code == 503:  # the first retries may already have run; the state is checked while not ready
        check = response.json()["checks"]["flaky.started"]
        assert check["status"] == "fail"
        assert "DeadlockError: deadlock detected while enabling row-level security" in check["error"]
        assert "plugin 'flaky'" in check["error"]
    await wait_until(lambda: "flaky" in harness.kernel.plugins, timeout=10)
    assert flaky.attempts == 4
    assert harness.kernel.generation > first.generation
    assert harness.kernel.config_version == first.config_version  # same configuration, more of it running
    response = await harness.client.get("/-/ready")
    assert response.status_code == 200 and "flaky.started" not in response.json()["checks"]
    assert (await harness.client.get("/flaky")).status_code == 200
    assert harness.runtime.plugins["flaky"].error is None


async def test_readiness_names_the_plugin_and_disabling_it_makes_the_worker_ready(kernel_harness):
    flaky = Flaky(failures=10**6)
    harness = await kernel_harness(plugins={"flaky": flaky}, settings=FAST_RETRY)
    response = await harness.client.get("/-/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert "cause: DeadlockError: deadlock detected" in body["checks"]["flaky.started"]["error"]
    await wait_until(lambda: flaky.attempts >= 3, timeout=5)  # retried with backoff
    result = await harness.apply({**FAST_RETRY, "plugins": {"disabled": ["flaky"]}})
    assert result.applied
    assert (await harness.client.get("/-/ready")).status_code == 200
    attempts = flaky.attempts
    await wait_until(lambda: harness.runtime._retry is None or harness.runtime._retry.done(), timeout=5)
    assert flaky.attempts == attempts


class Good:
    @hookimpl
    def register_routes(self, kernel):
        async def answer(request):
            return {"good": True}

        return [Route("/good", answer), Route("/shared", answer)]


class Crashing:
    @hookimpl
    def startup(self, kernel):
        raise ValueError("bad credentials file")


class Clashing:
    @hookimpl
    def register_routes(self, kernel):
        async def answer(request):
            return {}

        return [Route("/good", answer), Route("/shared", answer, methods=["GET", "POST"])]


class StrictSettings(PluginSettings):
    level: int = 1


class Strict:
    @hookimpl
    def plugin_settings_schema(self):
        return SettingsSchema(StrictSettings)


class Later:
    @hookimpl
    def register_routes(self, kernel):
        async def answer(request):
            return {"later": True}

        return [Route("/later", answer)]


async def test_a_plugin_refused_at_rescan_is_known_and_does_not_wedge_later_rescans(kernel_harness, caplog):
    harness = await kernel_harness(plugins={"good": Good()})
    runtime = harness.runtime
    # Found by the next rescan, as if just installed: one crashes at start-up, one clashes, one has bad settings.
    runtime.extra_plugins.update({"crashing": Crashing(), "clashing": Clashing(), "strict": Strict()})
    harness.write_settings({"strict": {"level": "high"}})
    with caplog.at_level(logging.ERROR, logger="botcriptofy"):
        result = await runtime.rescan()
    assert result.applied and result.error is None
    assert set(result.refused) == {"crashing", "clashing", "strict"}
    assert "ValueError('bad credentials file')" in result.refused["crashing"]
    assert "GET /good (declared by plugin 'good')" in result.refused["clashing"]
    assert "GET /shared (declared by plugin 'good')" in result.refused["clashing"]
    assert "key 'strict.level'" in result.refused["strict"]
    # The traceback of each refusal is logged.
    logged = [record for record in caplog.records if record.getMessage().startswith("refused plugin 'crashing'")]
    assert logged and logged[0].exc_info is not None
    # The others proceed.
    assert (await harness.client.get("/good")).status_code == 200
    assert (await harness.client.get("/-/ready")).status_code == 200  # refused at rescan: listed, not a readiness failure
    listed = {p["name"]: p for p in (await harness.client.get("/-/plugins")).json()["plugins"]}
    for name in ("crashing", "clashing", "strict"):
        assert listed[name]["enabled"] is False and listed[name]["error"] == result.refused[name]
    assert runtime.refused_plugins() == result.refused

    # A later rescan is not wedged: it tries them again (refused again, alone) and picks up a new plugin.
    runtime.extra_plugins["later"] = Later()
    result = await runtime.rescan()
    assert result.applied and "later" in harness.kernel.plugins and set(result.refused) == {"crashing", "clashing", "strict"}
    assert (await harness.client.get("/later")).status_code == 200

    # They can be disabled by name (they are known plugins).
    result = await harness.apply({"strict": {"level": "high"}, "plugins": {"disabled": ["crashing", "clashing", "strict"]}})
    assert result.applied, result.error
    assert runtime.refused_plugins() == {}


async def test_a_failing_restart_during_a_settings_change_refuses_the_change(kernel_harness):
    class Restartable:
        def __init__(self) -> None:
            self.fail = False

        @hookimpl
        def plugin_settings_schema(self):
            return SettingsSchema(StrictSettings)

        @hookimpl
        def startup(self, kernel):
            if self.fail:
                raise ConnectionError("broker unreachable")

    plugin = Restartable()
    harness = await kernel_harness(plugins={"restartable": plugin})
    before = harness.kernel
    plugin.fail = True
    result = await harness.apply({"restartable": {"level": 2}})
    assert not result.applied and "ConnectionError('broker unreachable')" in result.error
    assert harness.kernel is before and "restartable" in harness.kernel.plugins
