"""Decision records: the ``agents_decisions`` table (storage plugin), or a bounded in-memory list without one."""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from botcriptofy import StashKey

from ._models import decisions, utcnow

_MEMORY: StashKey[deque[dict[str, Any]]] = StashKey("botcriptofy_agents.memory_records")
COUNTED = ("executed", "awaiting_approval", "approved", "rejected", "expired", "failed")


def _memory(kernel: Any) -> deque[dict[str, Any]]:
    return kernel.stash.setdefault(_MEMORY, deque(maxlen=1000))  # type: ignore[no-any-return]


def new_id() -> str:
    return str(uuid.uuid4())


async def insert(kernel: Any, row: Mapping[str, Any]) -> None:
    now = utcnow()
    values = {**row, "created_at": row.get("created_at") or now, "updated_at": now}
    if not kernel.has_database():
        _memory(kernel).appendleft(values)
        return
    async with kernel.database().session(system=True) as session:
        await session.execute(sa.insert(decisions).values(**values))


async def update(kernel: Any, decision_id: str, **values: Any) -> None:
    values["updated_at"] = utcnow()
    if not kernel.has_database():
        for row in _memory(kernel):
            if row["id"] == decision_id:
                row.update(values)
        return
    async with kernel.database().session(system=True) as session:
        await session.execute(sa.update(decisions).where(decisions.c.id == decision_id).values(**values))


async def by_approval(kernel: Any, approval_id: str) -> dict[str, Any] | None:
    if not kernel.has_database():
        return next((dict(r) for r in _memory(kernel) if r.get("approval_id") == approval_id), None)
    async with kernel.database().session(system=True) as session:
        row = (await session.execute(sa.select(decisions).where(decisions.c.approval_id == approval_id))).first()
    return dict(row._mapping) if row is not None else None


async def actions_since(kernel: Any, agent: str, since: datetime) -> int:
    """Actions the agent took (or proposed for approval) since ``since``: what the hourly cap counts."""
    if not kernel.has_database():
        return sum(1 for r in _memory(kernel) if r["agent"] == agent and r["outcome"] in COUNTED and r["created_at"] >= since)
    statement = (
        sa.select(sa.func.count())
        .select_from(decisions)
        .where(decisions.c.agent == agent, decisions.c.created_at >= since, decisions.c.outcome.in_(COUNTED))
    )
    async with kernel.database().session(system=True) as session:
        return int((await session.execute(statement)).scalar_one())


async def listing(
    kernel: Any,
    *,
    departments: Iterable[str],
    agent: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Decisions of ``departments``, newest first."""
    wanted = sorted(set(departments))
    if not wanted:
        return []
    if not kernel.has_database():
        rows = [
            dict(r)
            for r in _memory(kernel)
            if r["department"] in wanted
            and (agent is None or r["agent"] == agent)
            and (action is None or r["action"] == action)
            and (outcome is None or r["outcome"] == outcome)
            and (subject is None or r["subject"] == subject)
            and (since is None or r["created_at"] >= since)
        ]
        return rows[:limit]
    statement = sa.select(decisions).where(decisions.c.department.in_(wanted)).order_by(decisions.c.created_at.desc()).limit(limit)
    if agent is not None:
        statement = statement.where(decisions.c.agent == agent)
    if action is not None:
        statement = statement.where(decisions.c.action == action)
    if outcome is not None:
        statement = statement.where(decisions.c.outcome == outcome)
    if subject is not None:
        statement = statement.where(decisions.c.subject == subject)
    if since is not None:
        statement = statement.where(decisions.c.created_at >= since)
    async with kernel.database().session(system=True) as session:
        return [dict(r._mapping) for r in (await session.execute(statement)).all()]


async def counters(kernel: Any, agent: str, *, hours: float = 24) -> dict[str, int]:
    """The agent's decisions of the last ``hours`` by source and outcome."""
    since = utcnow() - timedelta(hours=hours)
    rows = await listing(kernel, departments=[r for r in _departments_of(kernel, agent)], agent=agent, since=since, limit=100000)
    counted: dict[str, int] = {"decisions": len(rows)}
    for row in rows:
        counted[f"source:{row['source']}"] = counted.get(f"source:{row['source']}", 0) + 1
        counted[f"outcome:{row['outcome']}"] = counted.get(f"outcome:{row['outcome']}", 0) + 1
        if row["fallback_reason"]:
            counted[f"fallback:{row['fallback_reason']}"] = counted.get(f"fallback:{row['fallback_reason']}", 0) + 1
    return counted


def _departments_of(kernel: Any, agent: str) -> list[str]:
    from ._runner import registered_agents

    return [a.department for a in registered_agents(kernel) if a.name == agent]
