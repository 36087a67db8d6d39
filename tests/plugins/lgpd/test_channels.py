"""The notifications, telegram and webhooks plugins export what they hold about a person and erase it (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa

from botcriptofy import DataSubject
from botcriptofy_notifications._models import deliveries, inbox, preferences, utcnow
from botcriptofy_telegram import _store as telegram_store
from botcriptofy_telegram._models import approval_messages, links
from botcriptofy_webhooks._models import attempts, endpoints
from support import signup

from .conftest import PLUGINS, settings

EMAIL = "yara.ulyanova@example.com"
NAME = "Yara Ulyanova"
TELEGRAM_USER_ID = 771234567890
CHAT_ID = 881234567891
OTHER_TELEGRAM_USER_ID = 551234567
OTHER_CHAT_ID = 661234567
CHANNEL_TABLES = (
    "notifications_deliveries",
    "notifications_inbox",
    "notifications_preferences",
    "telegram_links",
    "telegram_link_codes",
    "telegram_approval_messages",
    "webhooks_endpoints",
    "webhooks_deliveries",
)


def delivery(address: str, target: str, recipient: dict[str, Any] | None, text: str) -> dict[str, Any]:
    now = utcnow()
    return {
        "notification_id": str(uuid.uuid4()),
        "channel": "email",
        "address": address,
        "target": target,
        "recipient": recipient,
        "category": "security.login",
        "severity": "info",
        "locale": "en",
        "subject": "New login",
        "text": text,
        "html": f"<p>{text}</p>",
        "notification": {"recipient": address},
        "status": "sent",
        "attempts": 1,
        "next_attempt_at": now,
        "created_at": now,
        "sent_at": now,
    }


async def seed(
    kernel: Any,
    user_id: str,
    tenant_id: str,
    other_user: str,
    other_tenant: str,
    *,
    email: str = EMAIL,
    name: str = NAME,
    telegram_user_id: int = TELEGRAM_USER_ID,
    chat_id: int = CHAT_ID,
) -> None:
    """Give the person (and another one) a Telegram link, link codes, approval messages, inbox, preferences, deliveries, webhooks."""
    now = utcnow()
    code, _ = await telegram_store.new_link_code(kernel, user_id, 600)
    assert await telegram_store.redeem(kernel, code, telegram_user_id, chat_id) == user_id
    await telegram_store.new_link_code(kernel, user_id, 600)  # a second, pending code
    code, _ = await telegram_store.new_link_code(kernel, other_user, 600)
    assert await telegram_store.redeem(kernel, code, OTHER_TELEGRAM_USER_ID, OTHER_CHAT_ID) == other_user
    async with kernel.database().session(system=True) as session:
        await session.execute(
            sa.insert(approval_messages),
            [
                {"approval_id": "apr-1", "chat_id": chat_id, "message_id": 11},
                {"approval_id": "apr-1", "chat_id": OTHER_CHAT_ID, "message_id": 12},
            ],
        )
        for who, tenant in ((user_id, tenant_id), (other_user, other_tenant)):
            await session.execute(
                sa.insert(inbox).values(
                    tenant_id=tenant,
                    user_id=who,
                    notification_id=str(uuid.uuid4()),
                    category="security.login",
                    severity="info",
                    subject="New login",
                    body=f"Hello {name if who == user_id else 'someone'}",
                    actions=[],
                    created_at=now,
                )
            )
            await session.execute(
                sa.insert(preferences).values(
                    user_id=who, tenant_id=tenant, locale="pt", timezone="America/Sao_Paulo", channels={"*": ["email"]}, updated_at=now
                )
            )
            endpoint_id = str(uuid.uuid4())
            await session.execute(
                sa.insert(endpoints).values(
                    id=endpoint_id,
                    tenant_id=tenant,
                    url=f"https://hooks.example.com/{tenant}",
                    secret="whsec_test",
                    event_types=["order.*"],  # not the sign-up's events, still being relayed meanwhile
                    enabled=True,
                    created_at=now,
                )
            )
            await session.execute(
                sa.insert(attempts).values(
                    id=str(uuid.uuid4()),
                    tenant_id=tenant,
                    endpoint_id=endpoint_id,
                    event_id=str(uuid.uuid4()),
                    event_type="order.filled",
                    payload=json.dumps({"email": email if who == user_id else "other@example.com"}),
                    status="delivered",
                    attempts=1,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        await session.execute(
            sa.insert(deliveries),
            [
                delivery(f"user:{user_id}", user_id, {"user_id": user_id, "email": email, "name": name}, f"Hello {name}"),
                delivery(f"email:{email}", "*", None, "Confirm your address"),
                delivery(f"user:{other_user}", other_user, {"user_id": other_user, "email": "other@example.com"}, "Hello other"),
                delivery("department:finance", "*", None, "Invoice batch ready"),
            ],
        )


async def scan(kernel: Any, needles: tuple[str, ...]) -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    async with kernel.database().session(system=True) as session:
        for table in CHANNEL_TABLES:
            result = await session.execute(sa.text(f'SELECT * FROM "{table}"'))
            columns = list(result.keys())
            for row in result.all():
                for column, value in zip(columns, row, strict=True):
                    found.extend((table, column, n) for n in needles if n.lower() in str(value).lower())
    return found


async def count(kernel: Any, table: sa.Table) -> int:
    async with kernel.database().session(system=True) as session:
        return int((await session.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def test_channel_plugins_export_then_erase_a_person(database_url, kernel_harness):
    harness = await kernel_harness(plugins=PLUGINS, settings=settings(database_url))
    kernel = harness.kernel
    person = await signup(harness.client, EMAIL, name=NAME)
    other = await signup(harness.client, "other.person@example.com", name="Other Person")
    user_id, tenant_id = person["user"]["id"], person["tenant"]["id"]
    await seed(kernel, user_id, tenant_id, other["user"]["id"], other["tenant"]["id"])
    subject = DataSubject(user_id=user_id, tenant_id=tenant_id, email=EMAIL)
    needles = (EMAIL, NAME, str(TELEGRAM_USER_ID), str(CHAT_ID), user_id, tenant_id)
    assert {t for t, _, _ in await scan(kernel, needles)} == set(CHANNEL_TABLES)  # the needles are really there before

    exported = await kernel.broadcast("export_subject_data", kernel=kernel, subject=subject)
    telegram = exported["telegram"]
    assert telegram["link"]["telegram_user_id"] == TELEGRAM_USER_ID and telegram["link"]["chat_id"] == CHAT_ID
    assert len(telegram["link_codes"]) == 2 and telegram["approval_messages"] == [{"approval_id": "apr-1", "message_id": 11}]
    notifications = exported["notifications"]
    assert [i["body"] for i in notifications["inbox"]] == [f"Hello {NAME}"]
    assert notifications["preferences"]["timezone"] == "America/Sao_Paulo"
    assert {f"user:{user_id}", f"email:{EMAIL}"} <= {d["address"] for d in notifications["deliveries"]}
    assert all(d["address"] not in {"department:finance", f"user:{other['user']['id']}"} for d in notifications["deliveries"])
    webhooks = exported["webhooks"]
    assert [e["url"] for e in webhooks["endpoints"]] == [f"https://hooks.example.com/{tenant_id}"]
    assert "secret" not in webhooks["endpoints"][0] and EMAIL in webhooks["deliveries"][0]["payload"]
    assert json.loads(json.dumps({n: exported[n] for n in ("notifications", "telegram", "webhooks")}))  # portable

    report = await kernel.broadcast("erase_subject_data", kernel=kernel, subject=subject)
    for name in ("notifications", "telegram", "webhooks"):
        assert report[name]["erased"] and report[name]["kept"] == {}, report[name]
    assert await scan(kernel, needles) == []
    # Other people's data and deliveries to a group stay.
    assert await telegram_store.user_of(kernel, OTHER_TELEGRAM_USER_ID) == other["user"]["id"]
    for table, left in ((inbox, 1), (preferences, 1), (endpoints, 1), (attempts, 1), (approval_messages, 1), (links, 1)):
        assert await count(kernel, table) == left, table.name
    async with kernel.database().session(system=True) as session:
        addresses = set((await session.scalars(sa.select(deliveries.c.address))).all())
    assert {f"user:{other['user']['id']}", "department:finance"} <= addresses

    # Twice is harmless, and nothing is left to export.
    again = await kernel.broadcast("erase_subject_data", kernel=kernel, subject=subject)
    assert {again[name] for name in ("notifications", "telegram", "webhooks")} == {None}
    exported = await kernel.broadcast("export_subject_data", kernel=kernel, subject=subject)
    assert {exported[name] for name in ("notifications", "telegram", "webhooks")} == {None}


async def test_staff_without_a_tenant_keep_tenant_webhooks(database_url, kernel_harness):
    harness = await kernel_harness(plugins=PLUGINS, settings=settings(database_url))
    kernel = harness.kernel
    person = await signup(harness.client, EMAIL, name=NAME)
    other = await signup(harness.client, "other.person@example.com", name="Other Person")
    await seed(kernel, person["user"]["id"], person["tenant"]["id"], other["user"]["id"], other["tenant"]["id"])
    subject = DataSubject(user_id=person["user"]["id"], tenant_id=None, email=EMAIL)
    report = await kernel.broadcast("erase_subject_data", kernel=kernel, subject=subject)
    assert report["webhooks"] is None and report["telegram"] is not None and report["notifications"] is not None
    assert await count(kernel, endpoints) == 2 and await count(kernel, links) == 1
