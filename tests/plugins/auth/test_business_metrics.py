"""Identity's business figure (``business_metrics``): customer sign-ups in a window, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from tests.support import signup, staff

from botcriptofy_auth._models import User


async def test_signups_count_customer_accounts_created_in_the_window(make_auth):
    harness = await make_auth(service_principals={"agent_finance": "finance:member"})
    kernel = harness.kernel
    await signup(harness.client, "ana@example.com")
    await signup(harness.client, "bia@example.com", name="Bia Influencer", account_type="influencer")
    await staff(harness, "staff@botcriptofy.dev", {"finance": "viewer"})  # staff: not a sign-up
    await kernel.service_actor("agent_finance")  # a service principal: not a sign-up
    old = await signup(harness.client, "old@example.com")
    async with kernel.database().session(system=True) as session:
        await session.execute(sa.update(User).where(User.id == old["user"]["id"]).values(created_at=datetime.now(UTC) - timedelta(days=10)))
    until = datetime.now(UTC) + timedelta(seconds=5)
    (figures,) = [
        f for f in (await kernel.broadcast("business_metrics", kernel=kernel, since=until - timedelta(days=7), until=until)).values() if f
    ]
    assert figures == {"signups": 2}
    month = await kernel.broadcast("business_metrics", kernel=kernel, since=until - timedelta(days=30), until=until)
    assert month["auth"] == {"signups": 3}
    earlier = await kernel.broadcast("business_metrics", kernel=kernel, since=until - timedelta(days=30), until=until - timedelta(days=7))
    assert earlier["auth"] == {"signups": 1}
