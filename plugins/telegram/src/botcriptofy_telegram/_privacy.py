"""LGPD hooks: what the Telegram plugin holds about a person, and how it forgets them.

The link between a person and their Telegram account (the numeric Telegram user id and the chat
id, identifiers of an external account), their link codes, and the approval messages sent to their
chat. Erasure deletes them all: nothing has to be kept. The plugin stores no Telegram username.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from botcriptofy import DataSubject, Kernel

from ._models import approval_messages, codes, links


def _iso(value: Any) -> Any:
    return value.isoformat() if value is not None else None


async def export(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    async with kernel.database().session(system=True) as session:
        link = (await session.execute(sa.select(links).where(links.c.user_id == subject.user_id))).first()
        issued = (await session.execute(sa.select(codes).where(codes.c.user_id == subject.user_id).order_by(codes.c.expires_at))).all()
        messages = []
        if link is not None:
            rows = await session.execute(sa.select(approval_messages).where(approval_messages.c.chat_id == link.chat_id))
            messages = rows.all()
    if link is None and not issued:
        return None
    return {
        "link": None
        if link is None
        else {"telegram_user_id": link.telegram_user_id, "chat_id": link.chat_id, "linked_at": _iso(link.linked_at)},
        "link_codes": [{"expires_at": _iso(c.expires_at), "used_at": _iso(c.used_at)} for c in issued],
        "approval_messages": [{"approval_id": m.approval_id, "message_id": m.message_id} for m in messages],
    }


async def erase(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    async with kernel.database().session(system=True, write_lock=True) as session:
        link = (await session.execute(sa.select(links).where(links.c.user_id == subject.user_id))).first()
        removed_messages = 0
        if link is not None:
            removed_messages = (
                await session.execute(sa.delete(approval_messages).where(approval_messages.c.chat_id == link.chat_id))
            ).rowcount
            await session.execute(sa.delete(links).where(links.c.user_id == subject.user_id))
        removed_codes = (await session.execute(sa.delete(codes).where(codes.c.user_id == subject.user_id))).rowcount
    if link is None and not removed_codes:
        return None
    erased = [f"{removed_codes} link code(s)"]
    if link is not None:
        erased[:0] = ["Telegram link (Telegram user id and chat id)", f"{removed_messages} approval message reference(s)"]
    return {"erased": erased, "kept": {}}
