"""LGPD hooks: the cache holds only copies of other plugins' data, dropped when a person is erased.

Export has nothing of its own to add (the owners of the data export it). Erasure drops every
entry stored under the person's own tenant (``invalidate_tenant``), in every layer and worker;
the plugins that cached per-user copies drop their own tags in their erasure hooks.
"""

from __future__ import annotations

from typing import Any

from botcriptofy import DataSubject, Kernel

from ._service import CacheService


def export(kernel: Kernel, subject: DataSubject) -> dict[str, Any] | None:
    return None


async def erase(service: CacheService | None, subject: DataSubject) -> dict[str, Any] | None:
    if service is None or subject.tenant_id is None:
        return None
    await service.invalidate_tenant(subject.tenant_id)
    return {"erased": [f"cached entries of tenant {subject.tenant_id}"], "kept": {}}
