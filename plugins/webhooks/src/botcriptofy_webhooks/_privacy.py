"""LGPD hooks: what the webhooks plugin holds about a person's own tenant, and how it forgets them.

Endpoints and delivery attempts belong to a tenant; they concern a person only when the tenant is
theirs (``DataSubject.tenant_id``). Payloads can carry the person's data and endpoint URLs can name
them, so erasure deletes the tenant's endpoints and attempts: no law obliges keeping them. Signing
secrets are never exported.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from botcriptofy import DataSubject, Kernel

from ._models import attempts, endpoints


def _iso(value: Any) -> Any:
    return value.isoformat() if value is not None else None


async def export(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    tenant = subject.tenant_id
    if tenant is None:
        return None
    async with kernel.database().session(system=True) as session:
        found = (await session.execute(sa.select(endpoints).where(endpoints.c.tenant_id == tenant).order_by(endpoints.c.created_at))).all()
        sent = (await session.execute(sa.select(attempts).where(attempts.c.tenant_id == tenant).order_by(attempts.c.created_at))).all()
    if not found and not sent:
        return None
    return {
        "endpoints": [
            {
                "id": e.id,
                "url": e.url,
                "event_types": e.event_types,
                "enabled": e.enabled,
                "disabled_reason": e.disabled_reason,
                "created_at": _iso(e.created_at),
            }
            for e in found
        ],
        "deliveries": [
            {
                "id": a.id,
                "endpoint_id": a.endpoint_id,
                "event_id": a.event_id,
                "event_type": a.event_type,
                "payload": a.payload,
                "status": a.status,
                "attempts": a.attempts,
                "last_status": a.last_status,
                "last_error": a.last_error,
                "created_at": _iso(a.created_at),
                "delivered_at": _iso(a.delivered_at),
            }
            for a in sent
        ],
    }


async def erase(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    tenant = subject.tenant_id
    if tenant is None:
        return None
    async with kernel.database().session(system=True, write_lock=True) as session:
        removed_attempts = (await session.execute(sa.delete(attempts).where(attempts.c.tenant_id == tenant))).rowcount
        removed_endpoints = (await session.execute(sa.delete(endpoints).where(endpoints.c.tenant_id == tenant))).rowcount
    if not (removed_attempts or removed_endpoints):
        return None
    return {"erased": [f"{removed_endpoints} webhook endpoint(s)", f"{removed_attempts} delivery attempt(s)"], "kept": {}}
