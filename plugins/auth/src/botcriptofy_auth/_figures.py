"""The business figure identity owns (``business_metrics``): sign-ups."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ._models import Tenant, User


async def signups(kernel: Any, since: datetime, until: datetime) -> int:
    """Customer accounts (people of trader and influencer tenants, not staff or service principals) created in ``[since, until)``."""
    statement = (
        sa.select(sa.func.count())
        .select_from(User)
        .join(Tenant, Tenant.id == User.tenant_id)
        .where(User.kind == "user", Tenant.type != "company", User.created_at >= since, User.created_at < until)
    )
    async with kernel.database().session(system=True) as session:
        return int((await session.execute(statement)).scalar_one())
