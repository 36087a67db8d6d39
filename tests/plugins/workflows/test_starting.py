"""An activity that arrives while the first generation is still starting its plugins waits for it.

Found live: `serve --workers 2` with every plugin; the configuration agent's schedule fired while auth had
not run its startup yet, and the activity failed twice (KeyError on auth's state) before a retry worked.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from botcriptofy_workflows._temporal import serving


class Runtime:
    """What ``serving`` reads: ``current()``, the generation serving now (or the one still starting)."""

    def __init__(self) -> None:
        self.starting = SimpleNamespace(app=None, name="starting")
        self.started = SimpleNamespace(app=object(), name="started")
        self.now = self.starting

    def current(self) -> SimpleNamespace:
        return self.now


async def test_an_activity_waits_until_the_first_generation_has_started_its_plugins():
    runtime = Runtime()
    waiting = asyncio.create_task(serving(runtime))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # no plugin code runs on a generation whose plugins have not all started
    runtime.now = runtime.started
    assert (await asyncio.wait_for(waiting, 2)).name == "started"


async def test_an_activity_on_a_serving_generation_does_not_wait():
    runtime = Runtime()
    runtime.now = runtime.started
    assert (await asyncio.wait_for(serving(runtime), 0.05)).name == "started"
