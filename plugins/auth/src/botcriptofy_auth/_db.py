"""Units of work over the storage plugin's database (through ``kernel.database()``, never by import)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from botcriptofy import Event, Kernel


def _session(kernel: Kernel, *, write: bool, **scope: Any) -> Any:
    # write_lock: on SQLite a read-then-write transaction queues behind other writers instead of
    # failing with "database is locked".
    return kernel.database().session(write_lock=write, **scope)


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
