"""Run requests in this process: a task per new request, plus a periodic sweep when no workflow engine runs.

The sweep resumes what a crash or a failing plugin left unfinished, reminds the DPO of near
deadlines and flags overdue requests, so a request completes with nothing but this process. When a
workflow engine is enabled (the workflows plugin), the same idempotent ``sweep`` runs as the
plugin's ``lgpd.deadlines`` schedule instead, once per tick across every worker, and the loop here
stands idle; it takes over again as soon as the engine is disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from botcriptofy import Kernel

from . import _requests
from ._state import settings_of

log = logging.getLogger("botcriptofy.lgpd")


class InProcessRunner:
    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self._tasks: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def submit(self, request_id: str) -> asyncio.Task[object]:
        task: asyncio.Task[object] = asyncio.create_task(self._run(request_id), name=f"lgpd-request-{request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, request_id: str) -> object:
        try:
            return await _requests.process(self._kernel.current(), request_id)
        except Exception:
            log.exception("privacy request %s could not run; the sweep retries it", request_id)
            return None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="lgpd-sweeper")

    async def _sweep_forever(self) -> None:
        while True:
            kernel = self._kernel.current()
            await asyncio.sleep(settings_of(kernel).sweep_interval)
            current = self._kernel.current()
            if current.has_workflow_engine():
                continue  # the lgpd.deadlines schedule sweeps on the engine
            try:
                await _requests.sweep(current)
            except Exception:
                log.exception("the privacy request sweep failed; it runs again after lgpd.sweep_interval")

    async def stop(self) -> None:
        pending = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
