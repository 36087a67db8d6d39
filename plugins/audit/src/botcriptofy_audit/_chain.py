"""The hash chain: appending entries, signing checkpoints, and verifying a chain end to end.

Each chain (one per tenant, plus ``platform``) numbers its entries ``seq`` = 1, 2, ...; an entry's
``hash`` is SHA-256 of the canonical JSON of its content and its predecessor's hash. Appends to one
chain serialise (a PostgreSQL advisory lock per chain, SQLite's write lock); different chains do
not wait for each other on PostgreSQL. Every ``checkpoint_every`` entries, or when
``checkpoint_interval`` seconds passed since the chain's last checkpoint, the head is signed with
Ed25519, so rewriting the chain or cutting its tail before a checkpoint is detected.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import text

from botcriptofy import AuditRecord, Database

from ._models import GENESIS, PLATFORM_CHAIN, checkpoints, entries
from ._signing import KeyRing

HASHED = (
    "chain",
    "seq",
    "prev_hash",
    "occurred_at",
    "tenant_id",
    "actor_id",
    "actor_kind",
    "action",
    "target",
    "outcome",
    "subject",
    "request_id",
    "client_address",
    "event_id",
)


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, UTF-8 characters kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(row: Mapping[str, Any]) -> str:
    content = {name: row[name] for name in HASHED}
    content["details"] = json.loads(row["details"])
    return hashlib.sha256(canonical(content).encode()).hexdigest()


def checkpoint_message(chain: str, seq: int, digest: str, created_at: str, key_id: str) -> bytes:
    return canonical({"chain": chain, "seq": seq, "entry_hash": digest, "created_at": created_at, "key_id": key_id}).encode()


def chain_of(tenant_id: str | None) -> str:
    return tenant_id or PLATFORM_CHAIN


def timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clip(value: str | None, size: int) -> str | None:
    return None if value is None else str(value)[:size]


@dataclass
class Checkpointing:
    """When to sign: every ``every`` entries or after ``interval`` seconds; remembers each chain's last signing time."""

    every: int
    interval: float
    last: dict[str, float] = field(default_factory=dict)

    def due(self, chain: str, seq: int) -> bool:
        if seq % self.every == 0:
            return True
        previous = self.last.get(chain)
        if previous is None:
            self.last[chain] = time.monotonic()
            return False
        return time.monotonic() - previous >= self.interval


async def _lock_chain(session: Any, dialect: str, chain: str) -> None:
    if dialect == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"botcriptofy.audit:{chain}"})


async def append(
    database: Database, keyring: KeyRing, policy: Checkpointing, record: AuditRecord, *, event_id: str | None = None
) -> int | None:
    """Append ``record`` to its chain; return its ``seq`` (None when ``event_id`` was already recorded)."""
    chain = chain_of(record.tenant_id)
    details = canonical(dict(record.details))
    async with database.session(system=True, write_lock=True) as session:
        await _lock_chain(session, database.dialect, chain)
        if event_id is not None:
            seen = await session.scalar(sa.select(entries.c.seq).where(entries.c.event_id == event_id))
            if seen is not None:
                return None
        head = (
            await session.execute(
                sa.select(entries.c.seq, entries.c.hash).where(entries.c.chain == chain).order_by(entries.c.seq.desc()).limit(1)
            )
        ).first()
        seq, prev = (head.seq + 1, head.hash) if head is not None else (1, GENESIS)
        row: dict[str, Any] = {
            "chain": chain,
            "seq": seq,
            "prev_hash": prev,
            "occurred_at": timestamp(record.occurred_at),
            "tenant_id": record.tenant_id,
            "actor_id": _clip(record.actor_id, 64),
            "actor_kind": _clip(record.actor_kind, 16),
            "action": record.action[:64],
            "target": _clip(record.target, 255),
            "outcome": record.outcome[:16],
            "subject": _clip(record.subject, 64),
            "request_id": _clip(record.request_id, 64),
            "client_address": _clip(record.client_address, 64),
            "event_id": event_id,
            "details": details,
        }
        row["hash"] = entry_hash(row)
        await session.execute(sa.insert(entries).values(**row))
        if policy.due(chain, seq):
            await _sign(session, keyring, chain, seq, row["hash"])
            policy.last[chain] = time.monotonic()
    return seq


async def _sign(session: Any, keyring: KeyRing, chain: str, seq: int, digest: str) -> None:
    created = timestamp()
    key_id, signature = keyring.sign(checkpoint_message(chain, seq, digest, created, keyring.active))
    await session.execute(
        sa.insert(checkpoints).values(chain=chain, seq=seq, entry_hash=digest, created_at=created, key_id=key_id, signature=signature)
    )


async def checkpoint_heads(database: Database, keyring: KeyRing, chain: str | None = None) -> int:
    """Sign the head of every chain (or of ``chain``) that moved since its last checkpoint; return how many were signed."""
    signed = 0
    async with database.session(system=True) as session:
        query = sa.select(entries.c.chain).distinct()
        if chain is not None:
            query = query.where(entries.c.chain == chain)
        chains = list((await session.scalars(query)).all())
    for name in chains:
        async with database.session(system=True, write_lock=True) as session:
            await _lock_chain(session, database.dialect, name)
            head = (
                await session.execute(
                    sa.select(entries.c.seq, entries.c.hash).where(entries.c.chain == name).order_by(entries.c.seq.desc()).limit(1)
                )
            ).first()
            last = await session.scalar(sa.select(sa.func.max(checkpoints.c.seq)).where(checkpoints.c.chain == name))
            if head is not None and (last is None or head.seq > last):
                await _sign(session, keyring, name, head.seq, head.hash)
                signed += 1
    return signed


# -- verification -----------------------------------------------------------------------------


@dataclass
class Problem:
    """The first entry whose content, order or presence was changed."""

    chain: str
    seq: int
    kind: str  # edited | deleted | inserted | reordered | truncated | checkpoint
    detail: str
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"chain": self.chain, "seq": self.seq, "id": self.id, "kind": self.kind, "detail": self.detail}


@dataclass
class ChainReport:
    chain: str
    entries: int = 0
    checkpoints: int = 0
    head_seq: int = 0
    problem: Problem | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "valid": self.problem is None,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "head_seq": self.head_seq,
            "problem": self.problem.as_dict() if self.problem else None,
        }


BATCH = 2000


async def verify_chain(database: Database, keyring: KeyRing, chain: str) -> ChainReport:
    report = ChainReport(chain)
    async with database.session(system=True) as session:
        signed = (
            (await session.execute(sa.select(checkpoints).where(checkpoints.c.chain == chain).order_by(checkpoints.c.seq))).mappings().all()
        )
    report.checkpoints = len(signed)
    marks: dict[int, str] = {}
    for mark in signed:
        message = checkpoint_message(chain, mark["seq"], mark["entry_hash"], mark["created_at"], mark["key_id"])
        if not keyring.verify(mark["key_id"], message, mark["signature"]):
            report.problem = Problem(
                chain, mark["seq"], "checkpoint", f"the checkpoint at seq {mark['seq']} has no valid signature of key '{mark['key_id']}'"
            )
            return report
        marks[mark["seq"]] = mark["entry_hash"]
    previous: Mapping[str, Any] | None = None
    before_previous: Mapping[str, Any] | None = None
    expected = 1
    after = 0
    first = True
    while report.problem is None:
        async with database.session(system=True) as session:
            batch = (
                (
                    await session.execute(
                        sa.select(entries).where(entries.c.chain == chain, entries.c.seq > after).order_by(entries.c.seq).limit(BATCH)
                    )
                )
                .mappings()
                .all()
            )
        if not batch:
            break
        for position, row in enumerate(batch):
            if first:
                first = False
                if row["seq"] > 1:
                    anchor = marks.get(row["seq"] - 1)
                    if anchor is None or anchor != row["prev_hash"]:
                        report.problem = Problem(
                            chain, 1, "deleted", f"entries 1 to {row['seq'] - 1} are missing and no checkpoint vouches for a purge"
                        )
                        break
                    expected = row["seq"]
                    previous = {"hash": row["prev_hash"], "seq": row["seq"] - 1, "id": None}
            problem = _check(chain, row, expected, previous, before_previous, batch[position + 1 :], marks)
            if problem is not None:
                report.problem = problem
                break
            report.entries += 1
            expected = row["seq"] + 1
            before_previous, previous = previous, row
        after = batch[-1]["seq"]
        if len(batch) < BATCH:
            break
    report.head_seq = expected - 1
    if report.problem is None and marks:
        last_mark = max(marks)
        if last_mark > report.head_seq:
            report.problem = Problem(
                chain,
                report.head_seq + 1,
                "truncated",
                f"entries {report.head_seq + 1} to {last_mark} are missing: a signed checkpoint vouches for seq {last_mark}",
            )
    return report


def _check(
    chain: str,
    row: Mapping[str, Any],
    expected: int,
    previous: Mapping[str, Any] | None,
    before_previous: Mapping[str, Any] | None,
    following: Any,
    marks: Mapping[int, str],
) -> Problem | None:
    seq = row["seq"]
    if seq != expected:
        return Problem(chain, expected, "deleted", f"entry {expected} is missing (the chain continues at {seq})")
    link = previous["hash"] if previous is not None else GENESIS
    if row["prev_hash"] != link:
        if before_previous is not None and row["prev_hash"] == before_previous["hash"] and previous is not None:
            return Problem(
                chain, previous["seq"], "inserted", f"entry {previous['seq']} was inserted: entry {seq} links past it", previous["id"]
            )
        if any(later["hash"] == row["prev_hash"] for later in following):
            return Problem(chain, seq, "reordered", f"entry {seq} is out of order: it links to an entry that now comes after it", row["id"])
        if previous is not None:
            return Problem(
                chain, previous["seq"], "edited", f"entry {previous['seq']} was changed: entry {seq} links to other content", previous["id"]
            )
        return Problem(chain, seq, "edited", f"entry {seq} does not start the chain", row["id"])
    if entry_hash(row) != row["hash"]:
        return Problem(chain, seq, "edited", f"entry {seq} was changed: its content does not match its hash", row["id"])
    mark = marks.get(seq)
    if mark is not None and mark != row["hash"]:
        return Problem(chain, seq, "edited", f"entry {seq} differs from what the signed checkpoint at {seq} vouches for", row["id"])
    return None


async def chains(database: Database) -> list[str]:
    async with database.session(system=True) as session:
        found = set((await session.scalars(sa.select(entries.c.chain).distinct())).all())
        found |= set((await session.scalars(sa.select(checkpoints.c.chain).distinct())).all())
    return sorted(found)


async def verify(database: Database, keyring: KeyRing, *, chain: str | None = None) -> dict[str, Any]:
    """Verify every chain (or one); return ``{"valid", "chains": [...], "first_problem"}``."""
    names = [chain] if chain is not None else await chains(database)
    reports = [await verify_chain(database, keyring, name) for name in names]
    first = next((r.problem for r in reports if r.problem is not None), None)
    return {
        "valid": first is None,
        "entries": sum(r.entries for r in reports),
        "chains": [r.as_dict() for r in reports],
        "first_problem": first.as_dict() if first else None,
    }
