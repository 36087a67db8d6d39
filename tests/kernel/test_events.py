"""The event bus without an outbox: typed events, isolated handlers, idempotency keys."""

from __future__ import annotations

import pytest

from botcriptofy import Envelope, Event, EventHandler, hookimpl


class OrderPlaced(Event):
    event_type = "test.order_placed"
    order_id: str
    amount_minor: int


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Envelope] = []

    @hookimpl
    def register_event_handlers(self, kernel):
        async def broken(envelope):
            raise RuntimeError("handler bug")

        def record(envelope):
            self.seen.append(envelope)

        return [
            EventHandler("recorder.broken", broken, events=(OrderPlaced,)),
            EventHandler("recorder.record", record, events=("test.order_placed",)),
            EventHandler("recorder.other", broken, events=("test.something_else",)),
        ]


async def test_each_handler_is_isolated_and_gets_a_typed_event(kernel_harness):
    recorder = Recorder()
    harness = await kernel_harness(plugins={"recorder": recorder})
    envelope = await harness.kernel.events.publish(OrderPlaced(order_id="o-1", amount_minor=2900), idempotency_key="order:o-1")
    assert len(recorder.seen) == 1
    seen = recorder.seen[0]
    assert seen.idempotency_key == "order:o-1" and seen.id == envelope.id
    assert seen.event == OrderPlaced(order_id="o-1", amount_minor=2900)
    outcome = await harness.kernel.events.deliver(envelope)
    assert set(outcome) == {"recorder.broken", "recorder.record"}
    assert isinstance(outcome["recorder.broken"], RuntimeError) and outcome["recorder.record"] is None


async def test_publishing_in_a_transaction_without_an_outbox_is_an_error(kernel_harness):
    harness = await kernel_harness(plugins={"recorder": Recorder()})
    with pytest.raises(RuntimeError, match="enable the storage plugin"):
        await harness.kernel.events.publish(OrderPlaced(order_id="o", amount_minor=1), session=object())


def test_event_types_must_be_unique():
    with pytest.raises(TypeError, match="declared twice"):

        class Clash(Event):
            event_type = "test.order_placed"


async def test_notify_publishes_what_the_typed_event_would(kernel_harness):
    """kernel.notify() skips building NotificationRequested: the envelope must still be that model's JSON dump."""
    from botcriptofy import Notification, NotificationAction, NotificationRequested

    routed: list[Envelope] = []

    class Router:
        @hookimpl
        def register_event_handlers(self, kernel):
            return [EventHandler("router.route", routed.append, events=(NotificationRequested,))]

    harness = await kernel_harness(plugins={"router": Router()})
    notification = Notification(
        recipient="department:finance:manager",
        subject="Payment failed",
        body="Invoice 42",
        category="billing.payment_failed",
        severity="warning",
        template="billing.payment_failed",
        params={"invoice": "42", "amount_minor": 2900},
        dedup_key="invoice:42",
        actions=(NotificationAction(label="Open", url="https://example.com/i/42"),),
        tenant_id="tenant-1",
    )
    await harness.kernel.notify(notification)
    [envelope] = routed
    assert envelope.type == NotificationRequested.event_type and envelope.tenant_id == "tenant-1"
    assert envelope.payload == NotificationRequested(notification=notification.to_dict()).model_dump(mode="json")
    assert envelope.event == NotificationRequested(notification=notification.to_dict())
    assert envelope.idempotency_key == envelope.id


async def test_a_detached_handler_runs_after_publish_returns_and_an_inline_one_inside_it(kernel_harness):
    inline: list[str] = []
    later: list[str] = []

    class Both:
        @hookimpl
        def register_event_handlers(self, kernel):
            return [
                EventHandler("both.inline", lambda e: inline.append(e.payload["order_id"]), events=(OrderPlaced,)),
                EventHandler("both.later", lambda e: later.append(e.payload["order_id"]), events=(OrderPlaced,), detached=True),
            ]

    harness = await kernel_harness(plugins={"both": Both()})
    for n in range(3):
        await harness.kernel.events.publish(OrderPlaced(order_id=f"o-{n}", amount_minor=1))
        assert inline[-1] == f"o-{n}"  # inside publish
    assert later == []  # not on the publisher's time: the publisher never let the loop run
    await harness.kernel.events.idle()
    assert later == ["o-0", "o-1", "o-2"]  # in order, once the loop ran


def test_event_ids_are_random_version_4_uuids_in_their_usual_text_form():
    """Envelope ids are formatted from os.urandom directly: they must read exactly as str(uuid.uuid4()) would."""
    import uuid

    ids = [Envelope.of("test.order_placed", {}).id for _ in range(4000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # The bits around the fixed ones are random: each hex digit there takes every value it may.
    for position in (0, 12, 15, 20, 35):
        assert {text[position] for text in ids} == set("0123456789abcdef")
    assert {text[14] for text in ids} == {"4"} and {text[19] for text in ids} == set("89ab")


async def test_notify_routes_only_when_a_handler_names_the_notification_type(kernel_harness):
    """A "*" subscriber (an audit trail) sees every event but does not route: notify() broadcasts send_notification."""
    from botcriptofy import Notification, NotificationRequested

    everything: list[Envelope] = []
    sent: list[Notification] = []

    class Audit:
        @hookimpl
        def register_event_handlers(self, kernel):
            return [EventHandler("audit.everything", everything.append)]

    class Channel:
        @hookimpl
        def send_notification(self, kernel, notification):
            sent.append(notification)

    harness = await kernel_harness(plugins={"audit": Audit(), "channel": Channel()})
    assert "*" in harness.kernel.events.named_types
    await harness.kernel.notify(Notification(recipient="user:1", subject="s", body="b"))
    assert [n.recipient for n in sent] == ["user:1"] and everything == []

    routed: list[Envelope] = []

    class Router:
        @hookimpl
        def register_event_handlers(self, kernel):
            return [EventHandler("router.route", routed.append, events=(NotificationRequested,))]

    harness = await kernel_harness(plugins={"audit": Audit(), "channel": Channel(), "router": Router()})
    await harness.kernel.notify(Notification(recipient="user:2", subject="s", body="b"))
    assert [e.payload["notification"]["recipient"] for e in routed] == ["user:2"]
    assert [n.recipient for n in sent] == ["user:1"]
