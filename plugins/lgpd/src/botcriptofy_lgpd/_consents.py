"""The consent ledger: every grant and revocation is a new row with its evidence; the latest row per purpose wins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from botcriptofy import Database

from ._models import consents
from ._settings import LgpdSettings


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


async def latest(database: Database, user_id: str) -> dict[str, dict[str, Any]]:
    """The current decision per purpose for ``user_id`` (purposes never decided are absent)."""
    newest = (
        sa.select(consents.c.purpose, sa.func.max(consents.c.id).label("id"))
        .where(consents.c.user_id == user_id)
        .group_by(consents.c.purpose)
    ).subquery()
    async with database.session(system=True) as session:
        rows = (await session.execute(sa.select(consents).join(newest, newest.c.id == consents.c.id))).mappings().all()
    return {row["purpose"]: dict(row) for row in rows}


async def has_consent(database: Database, settings: LgpdSettings, user_id: str, purpose: str) -> bool:
    configured = settings.purposes.get(purpose)
    if configured is None:
        return False
    if configured.required:
        return True
    async with database.session(system=True) as session:
        granted = await session.scalar(
            sa.select(consents.c.granted)
            .where(consents.c.user_id == user_id, consents.c.purpose == purpose)
            .order_by(consents.c.id.desc())
            .limit(1)
        )
    return bool(granted)


async def overview(database: Database, settings: LgpdSettings, user_id: str) -> dict[str, Any]:
    current = await latest(database, user_id)
    purposes = []
    for name, purpose in settings.purposes.items():
        row = current.get(name)
        purposes.append(
            {
                "purpose": name,
                "description": purpose.description,
                "required": purpose.required,
                "policy_version": purpose.policy_version,
                "granted": True if purpose.required else bool(row and row["granted"]),
                "granted_policy_version": row["policy_version"] if row else None,
                "decided_at": _iso(row["recorded_at"]) if row else None,
                "policy_changed": bool(row and row["granted"] and row["policy_hash"] != purpose.policy_hash),
            }
        )
    return {"purposes": purposes}


async def history(database: Database, user_id: str) -> list[dict[str, Any]]:
    async with database.session(system=True) as session:
        rows = (await session.execute(sa.select(consents).where(consents.c.user_id == user_id).order_by(consents.c.id))).mappings().all()
    return [
        {
            "purpose": row["purpose"],
            "granted": row["granted"],
            "policy_version": row["policy_version"],
            "policy_hash": row["policy_hash"],
            "channel": row["channel"],
            "client_address": row["client_address"],
            "recorded_at": _iso(row["recorded_at"]),
        }
        for row in rows
    ]


async def record(
    database: Database,
    settings: LgpdSettings,
    *,
    user_id: str,
    tenant_id: str | None,
    decisions: dict[str, bool],
    channel: str,
    client_address: str | None,
) -> list[tuple[str, bool]]:
    """Append a row for each decision that changes the current state; return the changes ``(purpose, granted)``."""
    current = await latest(database, user_id)
    moment = datetime.now(UTC)
    changes: list[tuple[str, bool]] = []
    rows = []
    for name, granted in sorted(decisions.items()):
        purpose = settings.purposes[name]
        row = current.get(name)
        if row is not None and row["granted"] == granted and (not granted or row["policy_hash"] == purpose.policy_hash):
            continue
        if row is None and not granted:
            continue
        changes.append((name, granted))
        rows.append(
            {
                "tenant_id": tenant_id,
                "user_id": user_id,
                "purpose": name,
                "granted": granted,
                "policy_version": purpose.policy_version,
                "policy_hash": purpose.policy_hash,
                "channel": channel,
                "client_address": client_address,
                "recorded_at": moment,
            }
        )
    if rows:
        async with database.session(system=True) as session:
            await session.execute(sa.insert(consents), rows)
    return changes
