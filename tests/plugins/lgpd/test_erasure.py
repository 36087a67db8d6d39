"""Erasure really erases: afterwards the person's e-mail, name and external account ids appear in no column of any table
(SQLite and PostgreSQL), in no cache entry in Redis and in no audit detail; legal holds are kept and reported; twice is harmless."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
import sqlalchemy as sa

from botcriptofy.testing import wait_until
from botcriptofy_audit import _chain
from botcriptofy_audit._state import state_of
from botcriptofy_auth._models import Identity
from botcriptofy_billing._models import Subscription, WebhookEvent
from support import STRONG_PASSWORD, signup, staff

from .conftest import settings
from .test_channels import seed
from .test_requests import _billing_data

EMAIL = "zelda.quixote@example.com"
NAME = "Zelda Quixote"
STRIPE_CUSTOMER = "cus_ZQX123external"
GOOGLE_SUBJECT = "google-subject-ZQX987"
TELEGRAM_USER_ID = 734512098765
TELEGRAM_CHAT_ID = 834512098766
NEEDLES = (EMAIL, NAME, STRIPE_CUSTOMER, GOOGLE_SUBJECT, str(TELEGRAM_USER_ID), str(TELEGRAM_CHAT_ID))


async def scan_database(database) -> list[tuple[str, str, str]]:
    """Every (table, column, needle) where a needle appears in any row, over every table of the database."""
    found: list[tuple[str, str, str]] = []

    def tables(connection: Any) -> list[str]:
        return sa.inspect(connection).get_table_names()

    async with database.engine.connect() as connection:
        if database.dialect == "postgresql":
            await connection.execute(sa.text("SELECT set_config('app.system', 'on', false)"))
        names = await connection.run_sync(tables)
        assert {"auth_users", "billing_customers", "audit_entries", "lgpd_consents", "botcriptofy_outbox"} <= set(names)
        for table in names:
            result = await connection.execute(sa.text(f'SELECT * FROM "{table}"'))
            columns = list(result.keys())
            for row in result.all():
                for column, value in zip(columns, row, strict=True):
                    text = str(value).lower()
                    found.extend((table, column, needle) for needle in NEEDLES if needle.lower() in text)
    return found


async def scan_redis(url: str, prefix: str) -> list[tuple[str, str]]:
    client = aioredis.Redis.from_url(url)
    found: list[tuple[str, str]] = []
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            kind = (await client.type(key)).decode()
            if kind == "string":
                values = [await client.get(key)]
            elif kind == "set":
                values = list(await client.smembers(key))
            elif kind == "hash":
                values = [b"%s=%s" % pair for pair in (await client.hgetall(key)).items()]
            elif kind == "zset":
                values = list(await client.zrange(key, 0, -1))
            elif kind == "list":
                values = list(await client.lrange(key, 0, -1))
            else:
                values = []
            for blob in [key, *values]:
                text = (blob or b"").decode("utf-8", "replace").lower()
                found.extend((key.decode(), needle) for needle in NEEDLES if needle.lower() in text)
    finally:
        await client.aclose()
    return found


async def test_erasure_leaves_no_trace_and_keeps_the_legal_hold(database_url, kernel_harness, redis_url, redis_prefix):
    from .conftest import PLUGINS

    harness = await kernel_harness(plugins=PLUGINS, settings=settings(database_url, redis_url=redis_url, redis_prefix=redis_prefix))
    client, kernel = harness.client, harness.kernel
    person = await signup(client, EMAIL, name=NAME)
    user_id, tenant_id = person["user"]["id"], person["tenant"]["id"]
    await _billing_data(kernel, tenant_id, customer=STRIPE_CUSTOMER)
    async with kernel.database().session(system=True) as session:
        session.add(Identity(tenant_id=tenant_id, user_id=user_id, provider="google", subject=GOOGLE_SUBJECT, email=EMAIL))
    # The channel plugins: a Telegram link (external account ids), inbox, preferences, delivery log, webhooks.
    other = await signup(client, "other.person@example.com", name="Other Person")
    await seed(
        kernel,
        user_id,
        tenant_id,
        other["user"]["id"],
        other["tenant"]["id"],
        email=EMAIL,
        name=NAME,
        telegram_user_id=TELEGRAM_USER_ID,
        chat_id=TELEGRAM_CHAT_ID,
    )
    assert (await client.post("/v1/auth/login", json={"email": EMAIL, "password": "a wrong password, surely"})).status_code == 401
    assert (await client.get("/v1/me", headers=person["headers"])).status_code == 200  # the principal, with e-mail and name, is cached
    await client.put("/v1/privacy/consents", json={"consents": {"marketing_email": True}}, headers=person["headers"])
    export = (await client.post("/v1/privacy/exports", headers=person["headers"])).json()

    async def exported():
        found = (await client.get(f"/v1/privacy/requests/{export['id']}", headers=person["headers"])).json()
        return found["status"] == "completed"

    await wait_until(exported, timeout=10)
    assert await scan_database(kernel.database())  # the needles are really there before
    assert await scan_redis(redis_url, redis_prefix)

    erased = await client.post("/v1/privacy/erasure", json={"password": STRONG_PASSWORD, "confirm": True}, headers=person["headers"])
    assert erased.status_code == 200, erased.text
    body = erased.json()
    assert body["status"] == "completed" and body["kind"] == "erasure"
    assert "5 years" in next(iter(body["report"]["kept"]["billing"].values()))
    assert {"auth", "billing", "cache", "lgpd", "audit", "notifications", "telegram", "webhooks"} <= set(body["report"]["plugins"])

    async def relayed():  # events published by the erasure itself reach the outbox relay
        return not await scan_database(kernel.database())

    await wait_until(relayed, timeout=10)
    assert await scan_database(kernel.database()) == []
    assert await scan_redis(redis_url, redis_prefix) == []
    assert list((harness.state_dir / "lgpd" / "exports").glob("*.enc")) == []
    # Legal hold: the subscription and the invoice event stay, anonymised.
    async with kernel.database().session(system=True) as session:
        subscription = await session.get(Subscription, "sub_ZQX1")
        invoice = await session.get(WebhookEvent, "evt_ZQX2")
    assert subscription is not None and subscription.customer_id is None and invoice is not None and invoice.object_id == "in_ZQX1"
    # The account is closed; the audit trail names the person only by id, and is intact.
    assert (await client.get("/v1/me", headers=person["headers"])).status_code == 401
    report = await _chain.verify(kernel.database(), state_of(kernel).keyring)
    assert report["valid"], report

    # The DPO erases the same person again (a request that also came by e-mail): nothing breaks, nothing reappears.
    dpo = await staff(harness, "dpo@botcriptofy.example", {"audit": "manager"})
    again = await client.post(
        "/v1/admin/privacy/erasure",
        json={"user_id": user_id, "tenant_id": tenant_id, "email": EMAIL, "reason": "e-mail to the DPO"},
        headers=dpo,
    )
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "completed"
    assert await scan_database(kernel.database()) == []
    audit = (await client.get("/v1/audit", params={"subject": user_id, "action": "privacy."}, headers=dpo)).json()["entries"]
    assert {"privacy.request_received", "privacy.request_processing", "privacy.request_completed"} <= {e["action"] for e in audit}
