"""LGPD hooks: what notifications holds about a person, and how it forgets them.

A person's inbox items, their preferences and the delivery log rows addressed to them (``target``
is their user id, or the address names them: ``user:<id>``, ``email:<address>``) are theirs. The
delivery log is an operational record with no legal retention duty, so erasure deletes those rows
rather than anonymising them. Deliveries to a group (``department:...``, ``target`` "*") name no
one and are left alone; deduplication marks are hashes and leases name workers.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from botcriptofy import DataSubject, Kernel

from ._models import deliveries, inbox, preferences


def _addressed(subject: DataSubject) -> sa.ColumnElement[bool]:
    addresses = [f"user:{subject.user_id}"]
    if subject.email:
        addresses += [f"email:{subject.email}", subject.email]
    return sa.or_(deliveries.c.target == subject.user_id, deliveries.c.address.in_(addresses))


def _iso(value: Any) -> Any:
    return value.isoformat() if value is not None else None


async def export(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    async with kernel.database().session(system=True) as session:
        items = (await session.execute(sa.select(inbox).where(inbox.c.user_id == subject.user_id).order_by(inbox.c.id))).all()
        pref = (await session.execute(sa.select(preferences).where(preferences.c.user_id == subject.user_id))).first()
        sent = (await session.execute(sa.select(deliveries).where(_addressed(subject)).order_by(deliveries.c.id))).all()
    if not items and pref is None and not sent:
        return None
    return {
        "inbox": [
            {
                "notification_id": i.notification_id,
                "category": i.category,
                "severity": i.severity,
                "subject": i.subject,
                "body": i.body,
                "actions": i.actions,
                "created_at": _iso(i.created_at),
                "read_at": _iso(i.read_at),
            }
            for i in items
        ],
        "preferences": None
        if pref is None
        else {
            "locale": pref.locale,
            "timezone": pref.timezone,
            "quiet_start": pref.quiet_start,
            "quiet_end": pref.quiet_end,
            "channels": pref.channels,
            "updated_at": _iso(pref.updated_at),
        },
        "deliveries": [
            {
                "notification_id": d.notification_id,
                "channel": d.channel,
                "address": d.address,
                "recipient": d.recipient,
                "category": d.category,
                "subject": d.subject,
                "text": d.text,
                "status": d.status,
                "attempts": d.attempts,
                "created_at": _iso(d.created_at),
                "sent_at": _iso(d.sent_at),
            }
            for d in sent
        ],
    }


async def erase(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    async with kernel.database().session(system=True, write_lock=True) as session:
        removed_inbox = (await session.execute(sa.delete(inbox).where(inbox.c.user_id == subject.user_id))).rowcount
        removed_prefs = (await session.execute(sa.delete(preferences).where(preferences.c.user_id == subject.user_id))).rowcount
        removed_log = (await session.execute(sa.delete(deliveries).where(_addressed(subject)))).rowcount
    if not (removed_inbox or removed_prefs or removed_log):
        return None
    return {
        "erased": [f"{removed_inbox} inbox item(s)", f"{removed_prefs} preference record(s)", f"{removed_log} delivery log row(s)"],
        "kept": {},
    }
