"""Reading the trail, signed exports, retention purges, and the trail's own privacy hooks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import text

from botcriptofy import Database, DataSubject

from ._chain import _lock_chain, _sign, canonical, chains, timestamp
from ._models import checkpoints, entries, purge_permits
from ._settings import minimum_days
from ._signing import KeyRing

PUBLIC_COLUMNS = (
    "id",
    "chain",
    "seq",
    "tenant_id",
    "occurred_at",
    "actor_id",
    "actor_kind",
    "action",
    "target",
    "outcome",
    "subject",
    "request_id",
    "client_address",
    "details",
    "prev_hash",
    "hash",
)


def present(row: Mapping[str, Any]) -> dict[str, Any]:
    shown = {name: row[name] for name in PUBLIC_COLUMNS}
    shown["details"] = json.loads(row["details"])
    return shown


async def list_entries(
    database: Database,
    *,
    tenant_id: str | None,
    everything: bool,
    limit: int,
    before: int | None = None,
    action: str | None = None,
    actor_id: str | None = None,
    subject: str | None = None,
    chain: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of entries, newest first; ``everything`` (the audit department) sees every chain, others their tenant's."""
    query = sa.select(entries).order_by(entries.c.id.desc()).limit(limit + 1)
    if not everything or tenant_id is not None:
        query = query.where(entries.c.tenant_id == tenant_id)
    if before is not None:
        query = query.where(entries.c.id < before)
    if action:
        query = query.where(entries.c.action.startswith(action, autoescape=True))
    if actor_id:
        query = query.where(entries.c.actor_id == actor_id)
    if subject:
        query = query.where(entries.c.subject == subject)
    if chain:
        query = query.where(entries.c.chain == chain)
    if since:
        query = query.where(entries.c.occurred_at >= since)
    if until:
        query = query.where(entries.c.occurred_at < until)
    scope: dict[str, Any] = {"system": True} if everything or tenant_id is None else {"tenant_id": tenant_id}
    async with database.session(**scope) as session:
        rows = (await session.execute(query)).mappings().all()
    page = [present(row) for row in rows[:limit]]
    return page, (page[-1]["id"] if len(rows) > limit else None)


async def export_lines(
    database: Database, keyring: KeyRing, *, chain: str | None, since: str | None, until: str | None
) -> AsyncIterator[str]:
    """Entries as JSON Lines, oldest first, then one signature line over their SHA-256 (signed JSON Lines)."""
    digest = hashlib.sha256()
    count = 0
    after = 0
    while True:
        query = sa.select(entries).where(entries.c.id > after).order_by(entries.c.id).limit(1000)
        if chain:
            query = query.where(entries.c.chain == chain)
        if since:
            query = query.where(entries.c.occurred_at >= since)
        if until:
            query = query.where(entries.c.occurred_at < until)
        async with database.session(system=True) as session:
            rows = (await session.execute(query)).mappings().all()
        for row in rows:
            line = canonical(present(row)) + "\n"
            digest.update(line.encode())
            count += 1
            yield line
        if len(rows) < 1000:
            break
        after = rows[-1]["id"]
    summary = {
        "type": "signature",
        "count": count,
        "sha256": digest.hexdigest(),
        "chain": chain,
        "since": since,
        "until": until,
        "signed_at": timestamp(),
    }
    key_id, signature = keyring.sign(canonical(summary).encode())
    yield canonical({**summary, "key_id": key_id, "signature": signature}) + "\n"


def verify_export(text_: str, keyring: KeyRing) -> bool:
    """Whether a signed JSON Lines export is complete and unmodified."""
    lines = text_.splitlines(keepends=True)
    if not lines:
        return False
    try:
        trailer = json.loads(lines[-1])
    except ValueError:
        return False
    digest = hashlib.sha256("".join(lines[:-1]).encode()).hexdigest()
    key_id, signature = trailer.pop("key_id", ""), trailer.pop("signature", "")
    if trailer.get("sha256") != digest or trailer.get("count") != len(lines) - 1:
        return False
    return keyring.verify(key_id, canonical(trailer).encode(), signature)


async def purge(database: Database, keyring: KeyRing, *, retention_days: int, now: datetime | None = None) -> dict[str, int]:
    """Remove each chain's oldest entries whose retention (and legal minimum) has passed; return entries removed per chain.

    Runs as the login role (the tables' owner; the application role may not DELETE). A signed
    checkpoint at the last removed entry anchors what remains, and a purge permit lets the
    append-only trigger accept exactly those deletions.
    """
    moment = now or datetime.now(UTC)
    removed: dict[str, int] = {}
    for chain in await chains(database):
        cutoff = 0
        async with database.session(system=True) as session:
            rows = (
                await session.execute(
                    sa.select(entries.c.seq, entries.c.action, entries.c.occurred_at, entries.c.hash)
                    .where(entries.c.chain == chain)
                    .order_by(entries.c.seq)
                )
            ).all()
        last_hash = None
        for row in rows:
            occurred = datetime.strptime(row.occurred_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            if occurred + timedelta(days=minimum_days(row.action, retention_days)) > moment:
                break
            cutoff, last_hash = row.seq, row.hash
        if cutoff == 0:
            continue
        async with _owner_transaction(database) as connection:
            await _lock_chain(connection, database.dialect, chain)
            marked = await connection.scalar(sa.select(checkpoints.c.seq).where(checkpoints.c.chain == chain, checkpoints.c.seq == cutoff))
            if marked is None:
                await _sign(connection, keyring, chain, cutoff, str(last_hash))
            await connection.execute(sa.insert(purge_permits).values(chain=chain, up_to_seq=cutoff, created_at=timestamp(moment)))
            result = await connection.execute(sa.delete(entries).where(entries.c.chain == chain, entries.c.seq <= cutoff))
        removed[chain] = result.rowcount
    return removed


@asynccontextmanager
async def _owner_transaction(database: Database) -> AsyncIterator[Any]:
    """A transaction as the login role (the tables' owner): PostgreSQL sessions switch to a role that may not DELETE."""
    if database.dialect == "postgresql":
        async with database.engine.begin() as connection:
            await connection.execute(text("SELECT set_config('app.system', 'on', true)"))
            yield connection
        return
    async with database.session(system=True, write_lock=True) as session:  # SQLite: take the write lock first
        yield await session.connection()


async def export_subject(database: Database, subject: DataSubject) -> dict[str, Any] | None:
    async with database.session(system=True) as session:
        rows = (
            (
                await session.execute(
                    sa.select(entries)
                    .where(sa.or_(entries.c.subject == subject.user_id, entries.c.actor_id == subject.user_id))
                    .order_by(entries.c.id)
                )
            )
            .mappings()
            .all()
        )
    if not rows:
        return None
    return {"entries": [present(row) for row in rows]}


async def erase_subject(database: Database, subject: DataSubject) -> dict[str, Any] | None:
    async with database.session(system=True) as session:
        count = await session.scalar(
            sa.select(sa.func.count())
            .select_from(entries)
            .where(sa.or_(entries.c.subject == subject.user_id, entries.c.actor_id == subject.user_id))
        )
    if not count:
        return None
    return {
        "erased": [],
        "kept": {
            f"{count} audit entries": "the audit trail is append-only and kept for its retention period (access records 6 months by "
            "Marco Civil Art. 15, financial and privacy records 5 years); it names the person only by a pseudonymous id and never "
            "stores e-mail addresses, names or secrets",
        },
    }
