"""Links, link codes, approval callbacks and leases in the database."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from botcriptofy import Kernel

from ._models import approval_messages, callbacks, codes, leases, links, utcnow


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


async def new_link_code(kernel: Kernel, user_id: str, ttl: int) -> tuple[str, Any]:
    code = secrets.token_urlsafe(18)
    expires = utcnow() + timedelta(seconds=ttl)
    async with kernel.database().session(system=True) as session:
        await session.execute(sa.delete(codes).where(codes.c.user_id == user_id, codes.c.used_at.is_(None)))
        await session.execute(sa.insert(codes).values(code_hash=_hash(code), user_id=user_id, expires_at=expires))
    return code, expires


async def redeem(kernel: Kernel, code: str, telegram_user_id: int, chat_id: int) -> str | None:
    """Link the Telegram account to the code's user; None for an unknown, used or expired code (single use)."""
    now = utcnow()
    async with kernel.database().session(system=True, write_lock=True) as session:
        used = await session.execute(
            sa.update(codes)
            .where(codes.c.code_hash == _hash(code), codes.c.used_at.is_(None), codes.c.expires_at > now)
            .values(used_at=now)
            .returning(codes.c.user_id)
        )
        user_id = used.scalar_one_or_none()
        if user_id is None:
            return None
        await session.execute(sa.delete(links).where(sa.or_(links.c.user_id == user_id, links.c.telegram_user_id == telegram_user_id)))
        await session.execute(sa.insert(links).values(user_id=user_id, telegram_user_id=telegram_user_id, chat_id=chat_id, linked_at=now))
    return str(user_id)


async def user_of(kernel: Kernel, telegram_user_id: int) -> str | None:
    async with kernel.database().session(system=True) as session:
        row = (await session.execute(sa.select(links.c.user_id).where(links.c.telegram_user_id == telegram_user_id))).first()
    return None if row is None else str(row.user_id)


async def chat_of(kernel: Kernel, user_id: str) -> int | None:
    async with kernel.database().session(system=True) as session:
        row = (await session.execute(sa.select(links.c.chat_id).where(links.c.user_id == user_id))).first()
    return None if row is None else int(row.chat_id)


async def all_links(kernel: Kernel) -> list[tuple[str, int]]:
    async with kernel.database().session(system=True) as session:
        rows = (await session.execute(sa.select(links.c.user_id, links.c.chat_id).order_by(links.c.user_id))).all()
    return [(str(r.user_id), int(r.chat_id)) for r in rows]


async def unlink(kernel: Kernel, user_id: str) -> bool:
    async with kernel.database().session(system=True) as session:
        result = await session.execute(sa.delete(links).where(links.c.user_id == user_id))
    return bool(result.rowcount)


async def new_callbacks(kernel: Kernel, approval_id: str, decisions: list[str]) -> dict[str, str]:
    made = {decision: secrets.token_urlsafe(16) for decision in decisions}
    async with kernel.database().session(system=True) as session:
        await session.execute(
            sa.insert(callbacks),
            [{"id": cid, "approval_id": approval_id, "decision": d, "created_at": utcnow()} for d, cid in made.items()],
        )
    return made


async def callback(kernel: Kernel, callback_id: str) -> tuple[str, str] | None:
    async with kernel.database().session(system=True) as session:
        row = (await session.execute(sa.select(callbacks).where(callbacks.c.id == callback_id))).first()
    return None if row is None else (str(row.approval_id), str(row.decision))


async def remember_message(kernel: Kernel, approval_id: str, chat_id: int, message_id: int) -> None:
    async with kernel.database().session(system=True) as session:
        await session.execute(sa.insert(approval_messages).values(approval_id=approval_id, chat_id=chat_id, message_id=message_id))


async def messages_of(kernel: Kernel, approval_id: str) -> list[tuple[int, int]]:
    async with kernel.database().session(system=True) as session:
        rows = (await session.execute(sa.select(approval_messages).where(approval_messages.c.approval_id == approval_id))).all()
    return [(int(r.chat_id), int(r.message_id)) for r in rows]


async def take_lease(kernel: Kernel, name: str, holder: str, ttl: float) -> tuple[bool, int | None]:
    """Take or renew ``name`` for ``holder``; return whether held and the stored update offset."""
    now = utcnow()
    until = now + timedelta(seconds=ttl)
    async with kernel.database().session(system=True, write_lock=True) as session:
        renewed = await session.execute(
            sa.update(leases)
            .where(leases.c.name == name, sa.or_(leases.c.holder == holder, leases.c.expires_at < now))
            .values(holder=holder, expires_at=until)
            .returning(leases.c.update_offset)
        )
        row = renewed.first()
        if row is not None:
            return True, row.update_offset
        if (await session.execute(sa.select(leases.c.name).where(leases.c.name == name))).first() is not None:
            return False, None
        try:
            async with session.begin_nested():
                await session.execute(sa.insert(leases).values(name=name, holder=holder, expires_at=until))
        except sa.exc.IntegrityError:
            return False, None
        return True, None


async def store_offset(kernel: Kernel, name: str, holder: str, offset: int) -> bool:
    async with kernel.database().session(system=True) as session:
        result = await session.execute(
            sa.update(leases).where(leases.c.name == name, leases.c.holder == holder).values(update_offset=offset)
        )
    return bool(result.rowcount)


async def release(kernel: Kernel, name: str, holder: str) -> None:
    async with kernel.database().session(system=True) as session:
        await session.execute(sa.update(leases).where(leases.c.name == name, leases.c.holder == holder).values(expires_at=utcnow()))
