"""LGPD hooks for the outbox: events may carry a person's e-mail address (a failed login names the address tried).

Export has nothing to add (events are copies of what their publishers export). Erasure blanks the
e-mail address wherever an event payload holds it, delivered or not, so it appears nowhere in the
database afterwards; the events themselves stay, for handlers still to run.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, cast, select, update

from botcriptofy import DataSubject, Kernel

from ._outbox import events

ERASED = "erased"


def _scrub(value: Any, email: str) -> Any:
    if isinstance(value, dict):
        return {key: _scrub(item, email) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item, email) for item in value]
    if isinstance(value, str) and email in value.lower():
        return ERASED
    return value


def export(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    return None


async def erase(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    if not subject.email or not kernel.has_database():
        return None
    email = subject.email.lower()
    async with kernel.database().session(system=True, write_lock=True) as session:
        pattern = "%" + email.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = (
            await session.execute(select(events.c.id, events.c.payload).where(cast(events.c.payload, String).ilike(pattern, escape="\\")))
        ).all()
        for row in rows:
            await session.execute(update(events).where(events.c.id == row.id).values(payload=_scrub(dict(row.payload), email)))
    if not rows:
        return None
    return {"erased": [f"the e-mail address in {len(rows)} outbox event(s)"], "kept": {}}
