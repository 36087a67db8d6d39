"""The dispatcher: one worker at a time (a lease) sends queued deliveries through their channels.

A round renews the lease, folds flood-capped deliveries whose window has passed into one digest per
channel and person, claims due deliveries (each row leased to this worker, so a worker taking over
after a crash waits for the lease to run out instead of sending twice), and sends them: different
people and chats at once, each one's deliveries in order. A failure is retried with exponential
backoff until ``max_attempts``, then the delivery is a dead letter that operators list and retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections import OrderedDict
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from botcriptofy import Delivery, DeliveryRefused, Kernel, Notification, Recipient, RoundErrors

from ._models import DEAD, DIGESTED, FAILED, FOLDED, QUEUED, SENT, deliveries, leases, utcnow
from ._state import channels_of, settings_of, state_of

log = logging.getLogger("botcriptofy.notifications")

LEASE = "dispatcher"


async def take_lease(kernel: Kernel, name: str, holder: str, ttl: float) -> bool:
    """Take or renew the lease ``name`` for ``holder``; False while another holder's lease runs."""
    now = utcnow()
    until = now + timedelta(seconds=ttl)
    async with kernel.database().session(system=True, write_lock=True) as session:
        renewed = await session.execute(
            sa.update(leases)
            .where(leases.c.name == name, sa.or_(leases.c.holder == holder, leases.c.expires_at < now))
            .values(holder=holder, expires_at=until)
        )
        if renewed.rowcount:
            return True
        exists = (await session.execute(sa.select(leases.c.holder).where(leases.c.name == name))).first()
        if exists is not None:
            return False
        try:
            async with session.begin_nested():
                await session.execute(sa.insert(leases).values(name=name, holder=holder, expires_at=until))
        except sa.exc.IntegrityError:
            return False
        return True


async def release_lease(kernel: Kernel, name: str, holder: str) -> None:
    async with kernel.database().session(system=True) as session:
        await session.execute(sa.delete(leases).where(leases.c.name == name, leases.c.holder == holder))


def backoff(attempts: int, base: float, ceiling: float) -> float:
    return float(min(ceiling, base * 2 ** max(attempts - 1, 0)) * random.uniform(0.8, 1.0))


class Dispatcher:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader = False
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._errors = RoundErrors(log, "notifications dispatcher")

    def wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"botcriptofy-notifications-{self.worker}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.leader:
            with contextlib.suppress(Exception):
                await release_lease(self.kernel, LEASE, self.worker)
            self.leader = False

    async def _run(self) -> None:
        while True:
            kernel = self.kernel.current()
            settings = settings_of(kernel)
            try:
                self.leader = await take_lease(kernel, LEASE, self.worker, settings.lease_ttl)
                busy = await self.round(kernel) if self.leader else False
                self._errors.succeeded()
                if busy:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._errors.failed(error)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that arrives
            # with a wake-up (an event handler waking the loop as the plugin stops), and the stop hangs.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.poll_interval):
                    await self._wakeup.wait()
            self._wakeup.clear()

    async def round(self, kernel: Kernel) -> bool:
        """Fold digests, claim and send one batch; return whether a full batch was claimed."""
        settings = settings_of(kernel)
        await self.fold(kernel)
        claimed = await self.claim(kernel, settings.batch_size, settings.lease_ttl)
        if not claimed:
            return False
        groups: OrderedDict[tuple[str, str, str], list[Any]] = OrderedDict()
        for row in claimed:
            groups.setdefault((row.channel, row.target, row.address if row.target == "*" else ""), []).append(row)
        channels = await channels_of(kernel)
        limit = asyncio.Semaphore(settings.concurrency)

        async def serve(rows: list[Any]) -> None:
            async with limit:
                for row in rows:
                    await self.send(kernel, channels, row)

        # Paced channels can take minutes over a batch: keep the lease and the rows' locks alive meanwhile,
        # so no other worker takes over and sends them a second time.
        keepalive = asyncio.create_task(self._keep_alive(kernel, [row.id for row in claimed], settings.lease_ttl))
        try:
            await asyncio.gather(*(serve(rows) for rows in groups.values()))
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
        return len(claimed) >= settings.batch_size

    async def _keep_alive(self, kernel: Kernel, ids: list[int], ttl: float) -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                await take_lease(kernel, LEASE, self.worker, ttl)
                async with kernel.database().session(system=True) as session:
                    await session.execute(
                        sa.update(deliveries)
                        .where(deliveries.c.id.in_(ids), deliveries.c.locked_by == self.worker, deliveries.c.status == QUEUED)
                        .values(locked_until=utcnow() + timedelta(seconds=max(ttl, 30.0)))
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not renew the dispatcher's lease")

    async def claim(self, kernel: Kernel, limit: int, ttl: float) -> list[Any]:
        now = utcnow()
        database = kernel.database()
        async with database.session(system=True, write_lock=True) as session:
            query = (
                sa.select(deliveries.c.id)
                .where(
                    deliveries.c.status == QUEUED,
                    deliveries.c.next_attempt_at <= now,
                    sa.or_(deliveries.c.locked_until.is_(None), deliveries.c.locked_until < now),
                )
                .order_by(deliveries.c.id)
                .limit(limit)
            )
            if database.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list((await session.scalars(query)).all())
            if not ids:
                return []
            await session.execute(
                sa.update(deliveries)
                .where(deliveries.c.id.in_(ids))
                .values(locked_by=self.worker, locked_until=now + timedelta(seconds=max(ttl, 30.0)))
            )
            rows = (await session.execute(sa.select(deliveries).where(deliveries.c.id.in_(ids)).order_by(deliveries.c.id))).all()
        return list(rows)

    async def send(self, kernel: Kernel, channels: dict[str, Any], row: Any) -> None:
        settings = settings_of(kernel)
        channel = channels.get(row.channel)
        attempt = row.attempts + 1
        error: str | None = None
        status = SENT
        if channel is None:
            error, status = f"no enabled plugin provides the channel '{row.channel}'", QUEUED
        else:
            notification = Notification.from_dict(row.notification)
            person = row.recipient
            recipient = Recipient(**{**person, "roles": person.get("roles") or {}}) if person else None
            delivery = Delivery(
                id=str(row.id),
                channel=row.channel,
                address=row.address,
                notification=notification,
                subject=row.subject,
                text=row.text,
                html=row.html,
                locale=row.locale,
                recipient=recipient,
                attempt=attempt,
            )
            try:
                await channel.send(delivery)
            except DeliveryRefused as refused:
                error, status = str(refused) or type(refused).__name__, FAILED
            except Exception as failed:  # any channel failure is retried
                error, status = f"{type(failed).__name__}: {failed}", QUEUED
                log.warning("delivery %s through %s failed (attempt %s): %s", row.id, row.channel, attempt, error)
        now = utcnow()
        values: dict[str, Any] = {"attempts": attempt, "last_error": error, "locked_by": None, "locked_until": None}
        if status == SENT:
            values |= {"status": SENT, "sent_at": now}
        elif status == FAILED:
            values |= {"status": FAILED}
        elif attempt >= settings.max_attempts:
            values |= {"status": DEAD}
        else:
            values |= {"next_attempt_at": now + timedelta(seconds=backoff(attempt, settings.retry_base, settings.retry_max))}
        async with kernel.database().session(system=True) as session:
            await session.execute(
                sa.update(deliveries).where(deliveries.c.id == row.id, deliveries.c.locked_by == self.worker).values(**values)
            )

    async def fold(self, kernel: Kernel) -> None:
        """Turn folded deliveries whose flood window has passed into one digest per channel and person."""
        settings = settings_of(kernel)
        state = state_of(kernel)
        now = utcnow()
        cutoff = now - timedelta(seconds=settings.flood_window)
        async with kernel.database().session(system=True, write_lock=True) as session:
            due = (
                await session.execute(
                    sa.select(deliveries.c.channel, deliveries.c.target, deliveries.c.address)
                    .where(deliveries.c.status == FOLDED, deliveries.c.created_at <= cutoff)
                    .group_by(deliveries.c.channel, deliveries.c.target, deliveries.c.address)
                )
            ).all()
            for channel, target, address in due:
                rows = (
                    await session.execute(
                        sa.select(deliveries)
                        .where(
                            deliveries.c.status == FOLDED,
                            deliveries.c.channel == channel,
                            deliveries.c.target == target,
                            deliveries.c.address == address,
                        )
                        .order_by(deliveries.c.id)
                    )
                ).all()
                first = rows[0]
                subjects = [row.subject for row in rows]
                digest = Notification(
                    recipient=address,
                    category="digest",
                    severity=max((r.severity for r in rows), key=_severity_rank),
                    template="digest",
                    params={"count": len(rows), "subjects": subjects},
                )
                rendered = state.templates.render(digest, first.locale)
                inserted = await session.execute(
                    sa.insert(deliveries)
                    .values(
                        notification_id=str(uuid.uuid4()),
                        channel=channel,
                        address=address,
                        target=target,
                        recipient=first.recipient,
                        category="digest",
                        severity=digest.severity,
                        locale=first.locale,
                        subject=rendered.subject,
                        text=rendered.text,
                        html=rendered.html,
                        notification=digest.to_dict(),
                        status=QUEUED,
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                    .returning(deliveries.c.id)
                )
                digest_id = inserted.scalar_one()
                await session.execute(
                    sa.update(deliveries).where(deliveries.c.id.in_([r.id for r in rows])).values(status=DIGESTED, digest_id=digest_id)
                )


_RANKS = {"info": 0, "warning": 1, "error": 2, "critical": 3}


def _severity_rank(severity: str) -> int:
    return _RANKS.get(severity, 0)
