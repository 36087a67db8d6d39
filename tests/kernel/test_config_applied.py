"""The runtime publishes ConfigApplied after an applied change, to the handlers that subscribe to it."""

from __future__ import annotations

from botcriptofy import ConfigApplied, EventHandler, hookimpl


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

