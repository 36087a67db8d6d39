"""The dispatcher's loop: stopping always ends it, even with a wake-up in the same turn; a database outage does not flood the log."""

from __future__ import annotations

import asyncio
import logging

import pytest

import botcriptofy_notifications._dispatcher as dispatcher_module
from botcriptofy import ServiceUnavailable
from botcriptofy.testing import wait_until
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


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_database_outage_is_one_warning_line_and_the_dispatcher_carries_on(make_staff_kernel, monkeypatch, caplog):
    """Live, PostgreSQL restarted under load: the dispatcher logged three chained tracebacks at ERROR for a 503."""
    harness = await make_staff_kernel(notifications={"poll_interval": 0.05})
    real = dispatcher_module.take_lease
    down = True
    after = 0

    async def flaky(*args, **kwargs):
        nonlocal after
        if down:
            raise ServiceUnavailable("The database is unreachable; nothing was written.", dependency="database")
        after += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(dispatcher_module, "take_lease", flaky)
    with caplog.at_level(logging.DEBUG, logger="botcriptofy.notifications"):
        dispatcher = Dispatcher(harness.kernel)  # a second worker's, beside the plugin's own
        dispatcher.start()
        await asyncio.sleep(0.6)  # about a dozen failed rounds each
        down = False
        await wait_until(lambda: after >= 4, timeout=10)  # both loops took the lease again
        await dispatcher.stop()
    said = [r for r in caplog.records if r.getMessage().startswith("notifications dispatcher")]
    loud = [(r.levelname, r.getMessage(), r.exc_info) for r in said if r.levelno >= logging.WARNING]
    paused = "notifications dispatcher paused: The database is unreachable; nothing was written."
    assert loud == [("WARNING", paused, None)] * 2  # once per dispatcher, no traceback
    assert sum(r.levelno == logging.DEBUG for r in said) >= 2  # the repeats, said quietly
