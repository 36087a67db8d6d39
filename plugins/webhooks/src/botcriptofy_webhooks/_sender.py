"""Delivery: fan events out to a tenant's endpoints, sign them (Standard Webhooks), send with retries.

A failing delivery is retried with exponential backoff; once an endpoint has failed for
``give_up_after`` seconds its delivery is failed, the endpoint disabled and its owner notified.
Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import random
import uuid
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from prometheus_client import Counter
from standardwebhooks.webhooks import Webhook

from botcriptofy import Envelope, Kernel, Notification, RoundErrors, StashKey

from ._guard import TargetRefused, resolve
from ._models import attempts, endpoints, utcnow
from ._settings import WebhooksSettings

log = logging.getLogger("botcriptofy.webhooks")


DELIVERIES: StashKey[Counter] = StashKey("webhooks.deliveries_counter")


def deliveries_counter(kernel: Kernel) -> Counter:
    """``botcriptofy_webhook_deliveries_total{result}``: one per runtime (the stash outlives generations)."""
    found = kernel.stash.get(DELIVERIES, None)
    if found is None:
        found = kernel.stash[DELIVERIES] = Counter(
            "botcriptofy_webhook_deliveries",
            "Webhook delivery attempts by result: delivered, failed (retried later) or gave_up (the endpoint is disabled).",
            ["result"],
            registry=None,
        )
    return found


def settings_of(kernel: Kernel) -> WebhooksSettings:
    settings = kernel.settings_for("webhooks")
    assert isinstance(settings, WebhooksSettings)
    return settings


async def fan_out(kernel: Kernel, envelope: Envelope) -> None:
    """Queue one delivery per enabled endpoint of the event's tenant that subscribes to its type."""
    if envelope.tenant_id is None or envelope.type.startswith(("kernel.", "telegram.")):
        return
    kernel = kernel.current()
    body = json.dumps({"type": envelope.type, "timestamp": envelope.occurred_at.isoformat(), "data": envelope.payload})
    async with kernel.database().session(tenant_id=envelope.tenant_id) as session:
        rows = (await session.execute(sa.select(endpoints).where(endpoints.c.enabled.is_(True)))).all()
        now = utcnow()
        for row in rows:
            if not any(fnmatch.fnmatchcase(envelope.type, pattern) for pattern in row.event_types):
                continue
            exists = await session.execute(
                sa.select(attempts.c.id).where(attempts.c.endpoint_id == row.id, attempts.c.event_id == envelope.id)
            )
            if exists.first() is None:
                await session.execute(
                    sa.insert(attempts).values(
                        id=str(uuid.uuid4()),
                        tenant_id=envelope.tenant_id,
                        endpoint_id=row.id,
                        event_id=envelope.id,
                        event_type=envelope.type,
                        payload=body,
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )


class Sender:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.task: asyncio.Task[None] | None = None
        self.wakeup = asyncio.Event()
        self.errors = RoundErrors(log, "webhooks sender")

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="botcriptofy-webhooks-sender")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def run(self) -> None:
        while True:
            kernel = self.kernel.current()
            try:
                await self.round(kernel)
                self.errors.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.errors.failed(error)
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: wait_for may swallow a stop (Python 3.11)
                async with asyncio.timeout(settings_of(kernel).poll_interval):
                    await self.wakeup.wait()
            self.wakeup.clear()

    async def round(self, kernel: Kernel) -> None:
        now = utcnow()
        database = kernel.database()
        async with database.session(system=True, write_lock=True) as session:
            query = (
                sa.select(attempts.c.id)
                .where(
                    attempts.c.status == "pending",
                    attempts.c.next_attempt_at <= now,
                    sa.or_(attempts.c.locked_until.is_(None), attempts.c.locked_until < now),
                )
                .order_by(attempts.c.created_at)
                .limit(50)
            )
            if database.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list((await session.scalars(query)).all())
            if not ids:
                return
            await session.execute(sa.update(attempts).where(attempts.c.id.in_(ids)).values(locked_until=now + timedelta(seconds=120)))
            rows = (
                await session.execute(
                    sa.select(attempts, endpoints.c.url, endpoints.c.secret, endpoints.c.enabled)
                    .join(endpoints, endpoints.c.id == attempts.c.endpoint_id)
                    .where(attempts.c.id.in_(ids))
                )
            ).all()
        await asyncio.gather(*(self.deliver(kernel, row) for row in rows))

    async def deliver(self, kernel: Kernel, row: Any) -> None:
        settings = settings_of(kernel)
        status: int | None = None
        error: str | None = None
        try:
            if not row.enabled:
                raise TargetRefused("the endpoint is disabled")
            host, address, port = await resolve(row.url, allow_private=settings.allow_private_targets)
            timestamp = utcnow()
            signature = Webhook(row.secret).sign(row.event_id, timestamp, row.payload)
            headers = {
                "webhook-id": row.event_id,
                "webhook-timestamp": str(int(timestamp.timestamp())),
                "webhook-signature": signature,
                "content-type": "application/json",
                "user-agent": "BotCriptoFy-Webhooks/0.1",
                "host": host,
            }
            target = httpx.URL(row.url).copy_with(host=address, port=port)
            async with httpx.AsyncClient(follow_redirects=False, timeout=settings.timeout) as client:
                response = await client.post(target, content=row.payload, headers=headers, extensions={"sni_hostname": host})
            status = response.status_code
            if not 200 <= status < 300:
                error = f"the endpoint answered {status}"
        except TargetRefused as refused:
            error = f"refused: {refused}"
        except httpx.HTTPError as failed:
            error = f"{type(failed).__name__}: {failed}"
        now = utcnow()
        values: dict[str, Any] = {"attempts": row.attempts + 1, "last_status": status, "last_error": error, "locked_until": None}
        give_up = False
        if error is None:
            values |= {"status": "delivered", "delivered_at": now}
            result = "delivered"
        elif now - row.created_at >= timedelta(seconds=settings.give_up_after):
            values |= {"status": "failed"}
            give_up = True
            result = "gave_up"
        else:
            result = "failed"
            wait = min(settings.retry_max, settings.retry_base * 2**row.attempts) * random.uniform(0.8, 1.0)
            values |= {"next_attempt_at": now + timedelta(seconds=wait)}
        deliveries_counter(kernel).labels(result).inc()
        async with kernel.database().session(system=True) as session:
            await session.execute(sa.update(attempts).where(attempts.c.id == row.id).values(**values))
            if give_up:
                disabled = await session.execute(
                    sa.update(endpoints)
                    .where(endpoints.c.id == row.endpoint_id, endpoints.c.enabled.is_(True))
                    .values(enabled=False, disabled_reason=error)
                )
                if disabled.rowcount:
                    await kernel.notify(
                        Notification(
                            recipient=f"tenant:{row.tenant_id}",
                            category="webhooks.endpoint_disabled",
                            severity="error",
                            template="webhooks.endpoint_disabled",
                            params={"url": row.url, "error": error},
                            dedup_key=f"webhook-disabled:{row.endpoint_id}",
                            tenant_id=row.tenant_id,
                        ),
                        session=session,
                    )
