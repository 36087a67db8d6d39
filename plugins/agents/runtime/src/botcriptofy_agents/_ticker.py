"""The agents' own clock, for when no workflow engine runs their schedules.

A sampling or checking agent registers a schedule (``register_schedules``); without the workflows
plugin it ticks itself with a :class:`Ticker` started in ``startup`` and stopped in ``shutdown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from botcriptofy import RoundErrors

log = logging.getLogger("botcriptofy.agents")


@dataclass
class Ticker:
    """Calls ``tick(kernel.current())`` every ``interval`` seconds (first at once with ``immediately``).

    A failing tick is logged under ``name`` and the loop goes on; ``stop`` wakes the loop and waits up
    to 5 s for a tick in progress before cancelling it.
    """

    kernel: Any
    interval: float
    tick: Callable[[Any], Awaitable[Any] | Any]
    name: str
    immediately: bool = False
    stopping: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    errors: RoundErrors = field(init=False)

    def __post_init__(self) -> None:
        self.errors = RoundErrors(log, f"{self.name}: tick")

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def _loop(self) -> None:
        if self.immediately:
            await self._tick()
        while not self.stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self.wake.wait()
            self.wake.clear()
            if self.stopping:
                break
            await self._tick()

    async def _tick(self) -> None:
        try:
            result = self.tick(self.kernel.current())
            if inspect.isawaitable(result):
                await result
        except Exception as error:
            self.errors.failed(error)
        else:
            self.errors.succeeded()

    async def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        task, self.task = self.task, None
        if task is None:
            return
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
