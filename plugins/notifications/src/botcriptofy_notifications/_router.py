"""Routing: a :class:`NotificationRequested` event becomes inbox entries and delivery rows.

One transaction per event: people are resolved, each person's preferences decide which channels
carry it (quiet hours spare critical alerts), deduplication marks and flood caps are applied, and
the rendered deliveries are queued for the dispatcher. A redelivered event (the outbox delivers at
least once) finds its rows already there and changes nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from botcriptofy import Envelope, Kernel, Notification, Recipient

from ._models import DEDUPLICATED, FOLDED, QUEUED, SUPPRESSED, dedup, deliveries, inbox, preferences, utcnow
from ._settings import NotificationsSettings
from ._state import channels_of, settings_of, state_of

log = logging.getLogger("botcriptofy.notifications")

FLOOD_COUNTED = ("queued", "sent", "failed", "dead")


def recipient_data(recipient: Recipient | None) -> dict[str, Any] | None:
    if recipient is None:
        return None
    return {
        "user_id": recipient.user_id,
        "tenant_id": recipient.tenant_id,
        "name": recipient.name,
        "email": recipient.email,
        "email_verified": recipient.email_verified,
        "locale": recipient.locale,
        "roles": dict(recipient.roles),
    }


def _parse_hhmm(value: str) -> time:
    hours, _, minutes = value.partition(":")
    return time(int(hours), int(minutes))


def in_quiet_hours(pref: Any, now: datetime) -> bool:
    if pref is None or not pref.quiet_start or not pref.quiet_end:
        return False
    try:
        local = now.astimezone(ZoneInfo(pref.timezone)).time()
    except ZoneInfoNotFoundError:
        local = now.time()
    start, end = _parse_hhmm(pref.quiet_start), _parse_hhmm(pref.quiet_end)
    return start <= local < end if start <= end else local >= start or local < end


def allowed_channels(pref: Any, category: str) -> list[str] | None:
    """The channels the person chose for ``category`` (the most specific pattern wins); None: every channel."""
    if pref is None or not pref.channels:
        return None
    best: tuple[int, list[str]] | None = None
    for pattern, names in dict(pref.channels).items():
        if fnmatch.fnmatchcase(category, pattern) and (best is None or len(pattern) > best[0]):
            best = (len(pattern), list(names))
    return None if best is None else best[1]


def dedup_mark(notification: Notification, channel: str, target: str) -> str:
    return hashlib.sha256(f"{notification.dedup_key}\x00{channel}\x00{target}".encode()).hexdigest()


async def first_in_window(session: Any, dialect: str, key: str, now: datetime, window: float) -> bool:
    """Record one sending under ``key``; False when one was recorded within ``window`` seconds (a duplicate)."""
    cutoff = now - timedelta(seconds=window)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    statement = insert(dedup).values(key=key, last_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=[dedup.c.key], set_={"last_at": now}, where=dedup.c.last_at < cutoff
    ).returning(dedup.c.key)
    return (await session.execute(statement)).first() is not None


async def _flooded(
    session: Any, dialect: str, channel: str, target: str, address: str, now: datetime, settings: NotificationsSettings
) -> bool:
    if dialect == "postgresql":  # concurrent routers count one after the other (SQLite's write lock already does)
        await session.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"notifications:{channel}:{target}:{address}"}
        )
    since = now - timedelta(seconds=settings.flood_window)
    query = sa.select(sa.func.count()).where(
        deliveries.c.channel == channel,
        deliveries.c.target == target,
        deliveries.c.address == address if target == "*" else sa.true(),
        deliveries.c.created_at >= since,
        deliveries.c.status.in_(FLOOD_COUNTED),
    )
    return int((await session.execute(query)).scalar_one()) >= settings.flood_cap


async def route(kernel: Kernel, envelope: Envelope) -> None:
    """Handle one ``kernel.notification_requested`` event."""
    kernel = kernel.current()
    notification = Notification.from_dict(envelope.payload["notification"])
    settings, state = settings_of(kernel), state_of(kernel)
    channels = await channels_of(kernel)
    if notification.channel is not None:
        channels = {n: c for n, c in channels.items() if n == notification.channel}
    personal = [c for c in channels.values() if c.route(notification.recipient) == "person"]
    grouped = [c for c in channels.values() if c.route(notification.recipient) == "address"]
    people = await kernel.resolve_recipients(notification.recipient)
    now = utcnow()
    dialect = kernel.database().dialect
    async with kernel.database().session(system=True, write_lock=True) as session:
        seen = await session.execute(sa.select(deliveries.c.id).where(deliveries.c.notification_id == envelope.id).limit(1))
        already = await session.execute(sa.select(inbox.c.id).where(inbox.c.notification_id == envelope.id).limit(1))
        if seen.first() is not None or already.first() is not None:
            return
        prefs = {}
        if people:
            rows = await session.execute(sa.select(preferences).where(preferences.c.user_id.in_([p.user_id for p in people])))
            prefs = {row.user_id: row for row in rows}
        rows_out: list[dict[str, Any]] = []

        async def queue(channel: str, target: str, recipient: Recipient | None, locale: str, rendered: Any, status: str) -> None:
            if (
                status == QUEUED
                and notification.dedup_key
                and not await first_in_window(session, dialect, dedup_mark(notification, channel, target), now, settings.dedup_window)
            ):
                status = DEDUPLICATED
            if status == QUEUED and await _flooded(session, dialect, channel, target, notification.recipient, now, settings):
                status = FOLDED
            rows_out.append(
                {
                    "notification_id": envelope.id,
                    "channel": channel,
                    "address": notification.recipient,
                    "target": target,
                    "recipient": recipient_data(recipient),
                    "category": notification.category,
                    "severity": notification.severity,
                    "locale": locale,
                    "subject": rendered.subject,
                    "text": rendered.text,
                    "html": rendered.html,
                    "notification": notification.to_dict(),
                    "status": status,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )

        for person in people:
            pref = prefs.get(person.user_id)
            locale = (pref.locale if pref is not None and pref.locale else None) or person.locale or settings.default_locale
            rendered = state.templates.render(notification, locale)
            if person.tenant_id is not None and (
                not notification.dedup_key
                or await first_in_window(session, dialect, dedup_mark(notification, "inbox", person.user_id), now, settings.dedup_window)
            ):
                await session.execute(
                    sa.insert(inbox).values(
                        tenant_id=person.tenant_id,
                        user_id=person.user_id,
                        notification_id=envelope.id,
                        category=notification.category,
                        severity=notification.severity,
                        subject=rendered.subject,
                        body=rendered.text,
                        actions=notification.to_dict()["actions"],
                        created_at=now,
                    )
                )
            # A person without a tenant is a mailbox, not an account's inbox (the auth plugin's single-use
            # account links): the message is the account's own mail, which preferences do not hold back.
            chosen = allowed_channels(pref, notification.category) if person.tenant_id is not None else None
            quiet = notification.severity != "critical" and in_quiet_hours(pref, now)
            for channel in personal:
                blocked = quiet or (chosen is not None and channel.name not in chosen)
                await queue(channel.name, person.user_id, person, locale, rendered, SUPPRESSED if blocked else QUEUED)
        if grouped:
            rendered = state.templates.render(notification, settings.default_locale)
            for channel in grouped:
                await queue(channel.name, "*", None, settings.default_locale, rendered, QUEUED)
        if rows_out:
            await session.execute(sa.insert(deliveries), rows_out)
    if not people and not grouped:
        log.warning("notification %s to '%s' reached nobody", envelope.id, notification.recipient)
    dispatcher = state.dispatcher
    if dispatcher is not None:
        dispatcher.wake()
