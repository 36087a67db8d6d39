"""The runtime publishes ConfigApplied after an applied change, to the handlers that subscribe to it."""

from __future__ import annotations

import asyncio

from botcriptofy import ConfigApplied, EventHandler, ServiceUnavailable, hookimpl
from botcriptofy.testing import wait_until


class Listener:
    def __init__(self) -> None:
        self.seen: list[dict] = []

    @hookimpl
    def register_event_handlers(self, kernel):
        return [EventHandler("config-listener", lambda envelope: self.seen.append(envelope.payload), events=(ConfigApplied,))]


class Other:
    @hookimpl
    def register_routes(self, kernel):
        return []


async def test_a_change_and_a_rollback_are_published_with_the_plugins_switched(kernel_harness):
    listener = Listener()
    harness = await kernel_harness(plugins={"listener": listener, "other": Other()})
    assert (await harness.apply({"plugins": {"disabled": ["other"]}})).applied
    first = harness.kernel.config_version
    assert (await harness.apply({})).applied
    assert (await harness.runtime.rollback(first)).applied
    assert [(p["stopped"], p["started"], p["rollback_to"]) for p in listener.seen] == [
        (["other"], [], None),
        ([], ["other"], None),
        (["other"], [], first),
    ]
    assert [p["version"] for p in listener.seen] == [first, first + 1, first + 2]


class SlowListener:
    """Handles ConfigApplied only when the test lets it: an outbox or audit trail slow under load."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[int] = []

    @hookimpl
    def register_event_handlers(self, kernel):
        async def handle(envelope):
            await self.release.wait()
            self.seen.append(envelope.payload["version"])

        return [EventHandler("slow-listener", handle, events=(ConfigApplied,))]


async def test_a_slow_announcement_does_not_hold_back_the_next_saved_change(kernel_harness):
    listener = SlowListener()
    harness = await kernel_harness(plugins={"listener": listener, "other": Other()}, watch=True)
    start = harness.kernel.config_version
    await asyncio.sleep(0.1)
    harness.write_settings({"plugins": {"disabled": ["other"]}})
    await wait_until(lambda: "other" not in harness.kernel.plugins, timeout=5)
    harness.write_settings({})
    # The first change's ConfigApplied is still being handled; the second change is live all the same.
    await wait_until(lambda: "other" in harness.kernel.plugins, timeout=5)
    assert listener.seen == []
    listener.release.set()
    await wait_until(lambda: len(listener.seen) == 2, timeout=5)
    assert listener.seen == [start + 1, start + 2]  # published in the order the versions were applied


async def test_reload_returns_once_its_change_is_announced(kernel_harness):
    listener = Listener()
    harness = await kernel_harness(plugins={"listener": listener, "other": Other()})
    assert (await harness.apply({"plugins": {"disabled": ["other"]}})).applied
    assert [p["stopped"] for p in listener.seen] == [["other"]]


class FlakyOutbox:
    """An outbox whose database is unreachable for its first ``down`` writes (ServiceUnavailable, as storage raises)."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.attempts = 0
        self.stored: list[dict] = []

    @hookimpl
    def event_outbox(self, kernel):
        return self

    async def add(self, envelopes, *, session=None):
        self.attempts += 1
        if self.attempts <= self.down:
            raise ServiceUnavailable("The database is unreachable; nothing was written.", retry_after=1, dependency="database")
        self.stored.extend(envelope.payload for envelope in envelopes if envelope.type == ConfigApplied.event_type)


async def test_an_announcement_refused_by_an_unavailable_database_is_retried_in_order(kernel_harness):
    outbox = FlakyOutbox(down=2)
    harness = await kernel_harness(plugins={"listener": Listener(), "other": Other(), "outbox": outbox})
    outbox.attempts = 0  # from here the database is down for two writes
    first = await harness.apply({"plugins": {"disabled": ["other"]}})
    assert first.applied
    second = await harness.apply({})
    assert [p["version"] for p in outbox.stored] == [first.version, second.version]
    assert outbox.attempts == 4  # two refused, then one write per version


async def test_an_announcement_that_cannot_be_published_does_not_hold_config_apply_for_long(monkeypatch, kernel_harness):
    import botcriptofy._runtime as runtime_module

    monkeypatch.setattr(runtime_module, "ANNOUNCE_WAIT", 0.3)
    monkeypatch.setattr(runtime_module, "STOP_ANNOUNCE_WAIT", 0.3)
    outbox = FlakyOutbox(down=1000)
    harness = await kernel_harness(plugins={"listener": Listener(), "other": Other(), "outbox": outbox})
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await harness.apply({"plugins": {"disabled": ["other"]}})).applied
    assert loop.time() - started < 3  # the event is still being retried in the background
    assert "other" not in harness.kernel.plugins and outbox.stored == []
