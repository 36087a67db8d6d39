"""This plugin's own privacy hooks: the consent ledger and the requests, as proof of compliance."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from botcriptofy import DataSubject, Kernel

from . import _consents
from ._exports import export_dir
from ._models import consents, requests
from ._state import settings_of


async def export(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    database = kernel.database()
    history = await _consents.history(database, subject.user_id)
    async with database.session(system=True) as session:
        rows = await session.execute(sa.select(requests).where(requests.c.user_id == subject.user_id).order_by(requests.c.received_at))
        found = [
            {
                "id": r["id"],
                "kind": r["kind"],
                "status": r["status"],
                "received_at": str(r["received_at"]),
                "completed_at": str(r["completed_at"]),
            }
            for r in rows.mappings().all()
        ]
    if not history and not found:
        return None
    return {"consents": history, "requests": found}


async def erase(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    database = kernel.database()
    async with database.session(system=True, write_lock=True) as session:  # reads, then writes
        ledger = await session.scalar(sa.select(sa.func.count()).select_from(consents).where(consents.c.user_id == subject.user_id))
        await session.execute(sa.update(consents).where(consents.c.user_id == subject.user_id).values(client_address=None))
        files = list(
            (
                await session.scalars(
                    sa.select(requests.c.file_name).where(requests.c.user_id == subject.user_id, requests.c.file_name.is_not(None))
                )
            ).all()
        )
        await session.execute(
            sa.update(requests)
            .where(requests.c.user_id == subject.user_id, requests.c.kind == "correction")
            .values(detail={"erased": True})
        )
        await session.execute(
            sa.update(requests).where(requests.c.user_id == subject.user_id, requests.c.file_name.is_not(None)).values(file_name=None)
        )
    directory = export_dir(settings_of(kernel), kernel.state_dir)
    for name in files:
        (directory / name).unlink(missing_ok=True)
    if not ledger and not files:
        return None
    return {
        "erased": ["client addresses in the consent ledger", "export files", "correction request contents"],
        "kept": {
            f"{ledger} consent records": "proof of consent (LGPD Art. 8 §2), by pseudonymous id only",
            "privacy requests and their steps": "proof that the request was answered (LGPD Art. 37), by pseudonymous id only",
        },
    }
