"""Stopping the dispatcher always ends its loop, even when a wake-up lands in the same turn as the stop."""

from __future__ import annotations

import asyncio

import pytest

from botcriptofy_notifications._dispatcher import Dispatcher


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_wake_up_arriving_with_the_stop_does_not_keep_the_loop_alive(make_staff_kernel):
    harness = await make_staff_kernel(notifications={"poll_interval": 30.0})
    # A wake-up (an event handler queued a delivery) and a stop (the plugin shuts down) in the same
    # few turns of the event loop: on Python 3.11, asyncio.wait_for swallowed the cancellation then.
    for turns in range(6):
        dispatcher = Dispatcher(harness.kernel)
        dispatcher.start()
        await asyncio.sleep(0.5)  # one round (the plugin's own dispatcher holds the lease), then idle until woken
        task = dispatcher._task
        assert task is not None
        dispatcher.wake()
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()  # what stop() does, once, in this very turn; then it waits for the loop to end
        await asyncio.wait([task], timeout=5)
        if not task.done():
            where = task.get_stack()[-1]
            task.cancel()
            pytest.fail(f"the loop outlived its stop (wake-up {turns} turns before), still at line {where.f_lineno}")
        await dispatcher.stop()
