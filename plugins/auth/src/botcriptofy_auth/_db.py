"""Units of work over the storage plugin's database (through ``kernel.database()``, never by import)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from botcriptofy import Event, Kernel

_WRITE_LOCK: dict[type, bool] = {}


def _session(kernel: Kernel, *, write: bool, **scope: Any) -> Any:
    database = kernel.database()
    if write:
        kind = type(database)
        supported = _WRITE_LOCK.get(kind)
        if supported is None:
            supported = _WRITE_LOCK[kind] = "write_lock" in inspect.signature(database.session).parameters
        if supported:
            # The storage plugin's SQLite BEGIN IMMEDIATE: a read-then-write transaction queues behind
            # other writers instead of failing with "database is locked".
            return database.session(write_lock=True, **scope)  # type: ignore[call-arg]
    return database.session(**scope)


@asynccontextmanager
async def system(kernel: Kernel, *, write: bool = False) -> AsyncIterator[Any]:
    """An unscoped unit of work, for platform operations that precede knowing the tenant (login, refresh, key lookup)."""
    async with _session(kernel, write=write, system=True) as session:
        yield session


@asynccontextmanager
async def tenant(kernel: Kernel, tenant_id: str, *, write: bool = False) -> AsyncIterator[Any]:
    """A unit of work that sees only ``tenant_id``'s rows (and, on PostgreSQL, is held to them by row-level security)."""
    async with _session(kernel, write=write, tenant_id=tenant_id) as session:
        yield session


async def publish(kernel: Kernel, event: Event, session: Any, *, tenant_id: str | None = None) -> None:
    """Publish in ``session``'s transaction when an outbox makes that durable; otherwise deliver right away."""
    await kernel.events.publish(event, session=session if kernel.outbox() is not None else None, tenant_id=tenant_id)
