"""Contracts for the next plugins: hook specs contributed by plugins, service actors around background work, the secret box."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from botcriptofy import Actor, Envelope, Event, EventHandler, acting_actor, hookimpl, hookspec, pass_kernel
from botcriptofy._cli import cli
from botcriptofy.testing import wait_until


class AlertSpecs:
    """Hook specifications a plugin contributes for others to implement."""

    @hookspec
    def alert_channels(self, kernel) -> list[str] | None:  # type: ignore[no-untyped-def]
        """Name the channels an alert goes to."""


class Alerts:
    @hookimpl
    def register_hookspecs(self):  # type: ignore[no-untyped-def]
        return [AlertSpecs]


class Pager:
    @hookimpl(optionalhook=True)
    def alert_channels(self, kernel):  # type: ignore[no-untyped-def]
        return ["pager"]


class Typo:
    @hookimpl
    def alert_chanels(self, kernel):  # type: ignore[no-untyped-def]
        return ["never"]


async def test_a_plugin_adds_hook_specs_that_others_implement(kernel_harness):
    harness = await kernel_harness(plugins={"alerts": Alerts(), "pager": Pager()})
    kernel = harness.kernel
    assert await kernel.broadcast("alert_channels", kernel=kernel) == {"pager": ["pager"]}
    # The spec is a real one: pluggy checks the implementation's arguments against it.
    assert kernel.hook.alert_channels.spec is not None
    assert kernel.hook.alert_channels.spec.argnames == ("kernel",)


async def test_an_optional_implementation_loads_without_the_declaring_plugin(kernel_harness):
    harness = await kernel_harness(plugins={"pager": Pager(), "typo": Typo()})
    assert "pager" in harness.kernel.plugins
    # A misspelled hook without optionalhook is still refused at load.
    assert "typo" not in harness.kernel.plugins
    assert "alert_chanels" in (harness.runtime.plugins["typo"].error or "")


class Seen(Event):
    event_type = "contracts_test.seen"

    n: int


class Worker:
    def __init__(self) -> None:
        self.actors: list[Actor | None] = []

    @hookimpl
    def register_event_handlers(self, kernel):  # type: ignore[no-untyped-def]
        def handle(envelope: Envelope) -> None:
            self.actors.append(acting_actor())

        return [EventHandler("worker.seen", handle, events=(Seen,))]


class Identity:
    @hookimpl
    def service_actor(self, kernel, name):  # type: ignore[no-untyped-def]
        if name == "worker":
            return Actor(id="svc-worker", kind="service", permissions=frozenset({"reports:read"}))
        return None


async def test_event_handlers_run_as_their_plugins_service_actor(kernel_harness):
    worker = Worker()
    harness = await kernel_harness(plugins={"worker": worker, "identity": Identity()})
    await harness.kernel.events.publish(Seen(n=1))
    await wait_until(lambda: worker.actors)
    actor = worker.actors[0]
    assert actor is not None and actor.id == "svc-worker" and actor.can("reports:read")
    # Outside the handler nobody is acting.
    assert acting_actor() is None


async def test_without_an_identity_plugin_the_service_actor_has_no_permissions(kernel_harness):
    worker = Worker()
    harness = await kernel_harness(plugins={"worker": worker})
    await harness.kernel.events.publish(Seen(n=2))
    await wait_until(lambda: worker.actors)
    actor = worker.actors[0]
    assert actor is not None and actor.id == "service:worker" and actor.kind == "service"
    assert not actor.permissions and not actor.can("reports:read")


async def test_secret_box_without_a_provider_is_a_503(kernel_harness):
    from botcriptofy import ProblemError

    harness = await kernel_harness()
    with pytest.raises(ProblemError) as caught:
        harness.kernel.secret_box()
    assert caught.value.status == 503 and "auth" in (caught.value.detail or "")


def test_commands_run_as_the_operator(tmp_path):
    seen: list[Actor | None] = []

    @click.command("whoami-test")
    @pass_kernel
    def whoami(kernel):  # type: ignore[no-untyped-def]
        seen.append(acting_actor())

    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.toml").write_text(f'[default.kernel]\nstate_dir = "{tmp_path / "state"}"\n')
    cli.add_command(whoami)
    try:
        result = CliRunner().invoke(cli, ["--settings", str(settings), "--env", "testing", "whoami-test"])
    finally:
        cli.commands.pop("whoami-test", None)
    assert result.exit_code == 0, result.output
    assert seen and seen[0] is not None and seen[0].kind == "operator" and seen[0].super_admin


def test_a_command_that_needs_some_hooks_starts_only_their_plugins(tmp_path):
    started: dict[str, list[str]] = {}

    @click.command("needs-test")
    @pass_kernel(needs=("database",))
    def narrow(kernel):  # type: ignore[no-untyped-def]
        started["narrow"] = sorted(kernel.plugins)

    @click.command("all-test")
    @pass_kernel
    def everything(kernel):  # type: ignore[no-untyped-def]
        started["all"] = sorted(kernel.plugins)

    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.toml").write_text(
        f'[default.kernel]\nstate_dir = "{tmp_path / "state"}"\n[default.storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "db.sqlite"}"\n'
        '[default.plugins]\ndisabled = ["workflows"]\n'  # the whole start-up, without the embedded Temporal server
    )
    cli.add_command(narrow)
    cli.add_command(everything)
    try:
        for name in ("needs-test", "all-test"):
            result = CliRunner().invoke(cli, ["--settings", str(settings), "--env", "testing", name])
            assert result.exit_code == 0, result.output
    finally:
        cli.commands.pop("needs-test", None)
        cli.commands.pop("all-test", None)
    # The database's provider and the built-in plugin: no identity, cache or workflow plugin started.
    assert started["narrow"] == ["core", "storage"], started
    assert {"storage", "auth", "cache"} <= set(started["all"])
