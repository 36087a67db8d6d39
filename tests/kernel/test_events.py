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
