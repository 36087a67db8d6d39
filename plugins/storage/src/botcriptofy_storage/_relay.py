"""The outbox relay: turns committed outbox rows into deliveries, one record per event and handler.

A round claims work in one short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN
IMMEDIATE`` on SQLite) by leasing delivery rows to this worker, delivers outside any transaction,
then records each outcome in a second transaction, guarded by the lease so that a worker whose
lease expired cannot overwrite the worker that took over. A worker that dies mid-round leaves
leased rows that another worker (or the next start) claims once the lease runs out: delivery is
at least once, and every handler gets the envelope's ``idempotency_key`` to drop duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from botcriptofy import RoundErrors

from ._outbox import DELIVERED, FAILED, PENDING, deliveries, envelope_from_row, events, utcnow
from ._unavailable import stats_for

if TYPE_CHECKING:
    from botcriptofy import Envelope, EventBus, Kernel

    from ._database import Database
    from ._settings import StorageSettings

log = logging.getLogger("botcriptofy.storage.outbox")

CLEANUP_EVERY = 60.0
COUNT_EVERY = 5.0  # seconds between two counts of the backlog (botcriptofy_outbox_backlog)
_MISSING: Any = object()


# The relay's statements, built once: a round only binds their values (building them was about 40 % of a round).
_DUE = (
    select(deliveries.c.event_id, deliveries.c.handler, deliveries.c.attempts)
    .where(
        deliveries.c.status == PENDING,
        deliveries.c.next_attempt_at <= bindparam("b_now"),
        or_(deliveries.c.locked_until.is_(None), deliveries.c.locked_until < bindparam("b_now")),
        deliveries.c.handler.in_(bindparam("b_names", expanding=True)),
    )
    .order_by(deliveries.c.next_attempt_at)
    .limit(bindparam("b_limit"))
    .with_for_update(skip_locked=True)
)
_LEASE = (
    update(deliveries)
    .where(deliveries.c.event_id == bindparam("b_event"), deliveries.c.handler == bindparam("b_handler"))
    .values(attempts=deliveries.c.attempts + 1, locked_until=bindparam("b_lease"), locked_by=bindparam("b_worker"))
)
_FRESH = (
    select(events.c.id, events.c.type)
    .where(events.c.dispatched_at.is_(None))
    .order_by(events.c.created_at)
    .limit(bindparam("b_limit"))
    .with_for_update(skip_locked=True)
)
_NEW_DELIVERIES = insert(deliveries)
_DISPATCHED = update(events).where(events.c.id.in_(bindparam("b_ids", expanding=True))).values(dispatched_at=bindparam("b_now"))
_LOAD = select(events).where(events.c.id.in_(bindparam("b_ids", expanding=True)))
_MINE = and_(
    deliveries.c.event_id == bindparam("b_event"),
    deliveries.c.handler == bindparam("b_handler"),
    deliveries.c.locked_by == bindparam("b_worker"),
    deliveries.c.attempts == bindparam("b_attempts"),
)
_DELIVERED = (
    update(deliveries)
    .where(_MINE)
    .values(status=DELIVERED, delivered_at=bindparam("b_now"), locked_until=None, locked_by=None, last_error=None)
)
_RETRY = (
    update(deliveries)
    .where(_MINE)
    .values(
        status=bindparam("b_status"),
        next_attempt_at=bindparam("b_next"),
        last_error=bindparam("b_error"),
        locked_until=None,
        locked_by=None,
    )
)

# The parameters of the outcome UPDATEs: deliveries done, deliveries to retry (or given up on).
_OutcomeRows = tuple[list[dict[str, Any]], list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Claim:
    envelope: Envelope
    handler: str
    attempts: int


class Relay:
    """Delivers outbox events to the handlers of the generation serving now (``kernel.current()``)."""

    def __init__(self, database: Database, kernel: Kernel, settings: StorageSettings) -> None:
        self.database = database
        self.kernel = kernel
        self.settings = settings
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_cleanup: float | None = None
        self._last_count: float | None = None
        self._errors = RoundErrors(log, f"outbox relay (retrying every {settings.relay_poll_interval:.1f} s)")

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Ask for a round now (called after a transaction that added events commits)."""
        self._wakeup.set()

    def start(self) -> None:
        if not self.running:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"botcriptofy-outbox-relay-{self.worker}")

    async def stop(self, grace: float = 10.0) -> None:
        """Finish the round in progress (up to ``grace`` seconds), then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        outcomes: list[tuple[Claim, BaseException | None]] = []
        while not self._stopping:
            woken = self._wakeup.is_set()
            self._wakeup.clear()
            if woken and not outcomes and self.settings.relay_batch_delay > 0:
                # Woken by a commit: let the commits right behind it land, and take their events in the same round.
                await asyncio.sleep(self.settings.relay_batch_delay)
            try:
                handled, outcomes = await self._round(outcomes)
                await self._cleanup_now_and_then()
                await self._count_now_and_then()
            except Exception as error:
                # Outcomes not written are kept for a later round (a stale one changes nothing: the lease guards it).
                self._errors.failed(error)
            else:
                self._errors.succeeded()
                if handled >= self.settings.relay_batch_size or outcomes:
                    continue
            if self._stopping:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.relay_poll_interval):
                    await self._wakeup.wait()
        if outcomes:
            with contextlib.suppress(Exception):  # not written: the leases run out and the deliveries are made again
                await self.record(outcomes)

    async def _round(self, done: list[tuple[Claim, BaseException | None]]) -> tuple[int, list[tuple[Claim, BaseException | None]]]:
        """Record the previous round's outcomes and claim the next deliveries in one transaction, then deliver them.

        Return how many were claimed and their outcomes, which the next round records (with its claim:
        one write transaction per round instead of two while events keep coming).
        """
        current = self.kernel.current()
        if current.app is None:
            if done:
                await self.record(done)
            return 0, []
        claims = await self.claim(current.events, done=done)
        if not claims:
            return 0, []
        return len(claims), await self._deliver_all(current.events, claims)

    # -- one round ----------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim due deliveries, deliver them, record the outcomes; return how many were attempted."""
        current = self.kernel.current()
        if current.app is None:
            # The generation is still being built: its handlers are not known yet, so nothing may be fanned out.
            return 0
        claims = await self.claim(current.events)
        if not claims:
            return 0
        await self.record(await self._deliver_all(current.events, claims))
        return len(claims)

    async def _deliver_all(self, bus: EventBus, claims: list[Claim]) -> list[tuple[Claim, BaseException | None]]:
        # Handlers run side by side, each through its own deliveries in order: a slow handler delays only itself.
        by_handler: dict[str, list[Claim]] = {}
        for claim in claims:
            by_handler.setdefault(claim.handler, []).append(claim)

        async def work_through(mine: list[Claim]) -> list[tuple[Claim, BaseException | None]]:
            return [(claim, await self._deliver(bus, claim)) for claim in mine]

        results = await asyncio.gather(*(work_through(mine) for mine in by_handler.values()))
        return [outcome for result in results for outcome in result]

    async def _deliver(self, bus: EventBus, claim: Claim) -> BaseException | None:
        try:
            outcome = await asyncio.wait_for(bus.deliver(claim.envelope, only=[claim.handler]), self.settings.relay_lease * 0.9)
        except TimeoutError:
            return TimeoutError(f"handler did not finish within {self.settings.relay_lease * 0.9:.1f} s")
        found = outcome.get(claim.handler, _MISSING)
        if found is _MISSING:
            return LookupError(f"no handler named '{claim.handler}' subscribes to {claim.envelope.type} in the current generation")
        return found  # type: ignore[no-any-return]

    async def claim(self, bus: EventBus, *, done: list[tuple[Claim, BaseException | None]] | None = None) -> list[Claim]:
        """Lease deliveries to this worker: due retries and expired leases, then the handlers of new events.

        ``done``: outcomes of an earlier claim, recorded first in the same transaction (see :meth:`record`).
        One write transaction whose statements run back to back (``Database.write_batch``).
        """
        outcomes = self._outcome_rows(done or [])
        leased, loaded = await self.database.write_batch(lambda connection: self._claim_in(connection, bus, outcomes))
        return [Claim(envelope_from_row(loaded[event_id], attempts), handler, attempts) for event_id, handler, attempts in leased]

    def _claim_in(self, connection: Connection, bus: EventBus, outcomes: _OutcomeRows) -> tuple[list[tuple[str, str, int]], dict[str, Any]]:
        batch = self.settings.relay_batch_size
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.relay_lease)
        leased: list[tuple[str, str, int]] = []
        self._write_outcomes(connection, outcomes, now)
        # Retries and expired leases first (up to half the batch), so a flood of new events cannot starve them.
        names = sorted({handler.name for handler in bus.handlers})
        if names:
            due = connection.execute(_DUE, {"b_now": now, "b_names": names, "b_limit": max(1, batch // 2)}).all()
            if due:
                connection.execute(
                    _LEASE, [{"b_event": row.event_id, "b_handler": row.handler, "b_lease": lease, "b_worker": self.worker} for row in due]
                )
                leased.extend((row.event_id, row.handler, row.attempts + 1) for row in due)
        # New events: one delivery row per subscribed handler, leased to this worker right away.
        fresh = connection.execute(_FRESH, {"b_limit": max(1, batch - len(leased))}).all()
        if fresh:
            rows = [
                {
                    "event_id": event_id,
                    "handler": handler,
                    "status": PENDING,
                    "attempts": 1,
                    "next_attempt_at": now,
                    "locked_until": lease,
                    "locked_by": self.worker,
                }
                for event_id, event_type in fresh
                for handler in bus.handler_names(event_type)
            ]
            if rows:
                connection.execute(_NEW_DELIVERIES, rows)
            connection.execute(_DISPATCHED, {"b_ids": [row.id for row in fresh], "b_now": now})
            leased.extend((row["event_id"], row["handler"], 1) for row in rows)
        if not leased:
            return [], {}
        wanted = sorted({event_id for event_id, _, _ in leased})
        loaded = {row.id: row for row in connection.execute(_LOAD, {"b_ids": wanted}).all()}
        return leased, loaded

    async def record(self, outcomes: list[tuple[Claim, BaseException | None]]) -> None:
        """Store each delivery's outcome: delivered, or retried later with backoff, or failed after ``max_attempts``."""
        rows = self._outcome_rows(outcomes)
        await self.database.write_batch(lambda connection: self._write_outcomes(connection, rows, utcnow()))

    def _outcome_rows(self, outcomes: list[tuple[Claim, BaseException | None]]) -> _OutcomeRows:
        """The parameters of the outcome UPDATEs (and the log lines of the failures, said here, on the event loop)."""
        now = utcnow()
        done: list[dict[str, Any]] = []
        retry: list[dict[str, Any]] = []
        for claim, error in outcomes:
            key = {"b_event": claim.envelope.id, "b_handler": claim.handler, "b_attempts": claim.attempts}
            if error is None:
                done.append(key)
                continue
            gave_up = 0 < self.settings.max_attempts <= claim.attempts
            text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            retry.append(
                {
                    **key,
                    "b_status": FAILED if gave_up else PENDING,
                    "b_error": text[:4000],
                    "b_next": now + timedelta(seconds=self.backoff(claim.attempts)),
                }
            )
            if gave_up:
                log.error(
                    "event %s (%s) failed %s times in handler %s; giving up: %s",
                    claim.envelope.id,
                    claim.envelope.type,
                    claim.attempts,
                    claim.handler,
                    text,
                )
            else:
                log.warning(
                    "event %s (%s) failed in handler %s (attempt %s), will retry: %s",
                    claim.envelope.id,
                    claim.envelope.type,
                    claim.handler,
                    claim.attempts,
                    text,
                )
        return done, retry

    def _write_outcomes(self, connection: Connection, rows: _OutcomeRows, now: datetime) -> None:
        done, retry = rows
        if done:
            connection.execute(_DELIVERED, [{**row, "b_now": now, "b_worker": self.worker} for row in done])
        if retry:
            connection.execute(_RETRY, [{**row, "b_worker": self.worker} for row in retry])

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt: base * 2^(attempts-1), capped, with ±10 % jitter."""
        delay = min(self.settings.retry_max_delay, self.settings.retry_base_delay * (2 ** min(max(attempts - 1, 0), 30)))
        return float(delay * random.uniform(0.9, 1.1))

    # -- housekeeping --------------------------------------------------------------------------

    async def _count_now_and_then(self) -> None:
        loop = asyncio.get_running_loop()
        if self._last_count is not None and loop.time() - self._last_count < COUNT_EVERY:
            return
        self._last_count = loop.time()
        await self.count_backlog()

    async def count_backlog(self) -> int:
        """Count the events not fanned out yet and the deliveries waiting; keep it for ``botcriptofy_outbox_backlog``."""
        async with self.database.session(system=True) as session:
            undispatched = await session.scalar(select(func.count()).select_from(events).where(events.c.dispatched_at.is_(None)))
            waiting = await session.scalar(select(func.count()).select_from(deliveries).where(deliveries.c.status == PENDING))
        backlog = int(undispatched or 0) + int(waiting or 0)
        stats_for(self.kernel.runtime).outbox_backlog = backlog
        return backlog

    async def _cleanup_now_and_then(self) -> None:
        loop = asyncio.get_running_loop()
        if self._last_cleanup is not None and loop.time() - self._last_cleanup < CLEANUP_EVERY:
            return
        self._last_cleanup = loop.time()
        await self.cleanup()

    async def cleanup(self) -> int:
        """Delete events older than ``retention_hours`` whose deliveries all succeeded; return how many."""
        cutoff = utcnow() - timedelta(hours=self.settings.retention_hours)
        unfinished = exists().where(deliveries.c.event_id == events.c.id, deliveries.c.status != DELIVERED)
        async with self.database.session(system=True, write_lock=True) as session:
            result = await session.execute(delete(events).where(events.c.dispatched_at < cutoff, ~unfinished))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
