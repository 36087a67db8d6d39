"""Notifications: durable requests through the outbox, routing, preferences, dedup, retries, dead letters, digests, inbox."""

from __future__ import annotations

import sqlalchemy as sa

from botcriptofy import Notification
from botcriptofy.testing import wait_until
from botcriptofy_auth._accounts import set_blocked
from botcriptofy_notifications._models import deliveries

from .conftest import PASSWORD, ChannelPlugin, RecordingChannel, add_staff, token_for


async def statuses(harness, channel: str | None = None) -> list[tuple[str, str, str]]:
    query = sa.select(deliveries.c.channel, deliveries.c.target, deliveries.c.status).order_by(deliveries.c.id)
    if channel is not None:
        query = query.where(deliveries.c.channel == channel)
    async with harness.kernel.database().session(system=True) as session:
        return [tuple(row) for row in (await session.execute(query)).all()]


async def test_department_address_resolves_to_its_active_members_with_a_minimum_role(make_staff_kernel):
    harness = await make_staff_kernel()
    manager = await add_staff(harness, "boss@example.com", {"finance": "manager"})
    member = await add_staff(harness, "ana@example.com", {"finance": "member", "security": "viewer"})
    await add_staff(harness, "sec@example.com", {"security": "manager"})
    kernel = harness.kernel
    assert {r.user_id for r in await kernel.resolve_recipients("department:finance")} == {manager, member}
    assert [r.user_id for r in await kernel.resolve_recipients("department:finance:manager")] == [manager]
    assert await kernel.resolve_recipients("department:nowhere") == []
    found = await kernel.resolve_recipients(f"user:{member}")
    assert found[0].email == "ana@example.com" and found[0].actor.can("finance:act") and not found[0].actor.can("finance:*")
    await set_blocked(kernel, user_id=member, blocked=True, reason="test", by="test")
    assert [r.user_id for r in await kernel.resolve_recipients("department:finance")] == [manager]
    assert await kernel.resolve_recipients(f"user:{member}") == []


async def test_committed_notification_is_delivered_and_a_rolled_back_one_never(make_staff_kernel):
    channel = RecordingChannel()
    harness = await make_staff_kernel(plugins={"channel": ChannelPlugin(channel)})
    user = await add_staff(harness, "ana@example.com", {"finance": "member"})
    kernel = harness.kernel

    class Abort(Exception):
        pass

    try:
        async with kernel.database().session(system=True) as session:
            await kernel.notify(Notification(recipient=f"user:{user}", subject="rolled back", body="never"), session=session)
            raise Abort
    except Abort:
        pass
    async with kernel.database().session(system=True) as session:
        await kernel.notify(
            Notification(recipient=f"user:{user}", subject="committed", body="hello <b>", category="agent.alert"), session=session
        )

    async def sent():
        return await statuses(harness) == [("test", user, "sent")]

    await wait_until(sent, timeout=10)
    assert [d.subject for d in channel.sent] == ["committed"]
    assert channel.sent[0].html == "hello &lt;b&gt;" and channel.sent[0].recipient.user_id == user

    headers = await token_for(harness, "ana@example.com")
    inbox = (await harness.client.get("/v1/notifications", headers=headers)).json()
    assert [i["subject"] for i in inbox["items"]] == ["committed"] and inbox["unread"] == 1
    item = inbox["items"][0]["id"]
    assert (await harness.client.post(f"/v1/notifications/{item}/read", headers=headers)).json() == {"marked": 1}
    assert (await harness.client.get("/v1/notifications?unread=true", headers=headers)).json() == {"items": [], "unread": 0}
    missing = await harness.client.post("/v1/notifications/999999/read", headers=headers)
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")


async def test_templates_render_per_locale_with_escaping_and_dedup_sends_once_per_person(make_staff_kernel):
    channel = RecordingChannel()
    harness = await make_staff_kernel(plugins={"channel": ChannelPlugin(channel)})
    pt = await add_staff(harness, "pt@example.com", {"finance": "member"})
    en = await add_staff(harness, "en@example.com", {"finance": "viewer"})
    headers = await token_for(harness, "en@example.com")
    response = await harness.client.put("/v1/notifications/preferences", headers=headers, json={"locale": "en", "timezone": "UTC"})
    assert response.status_code == 200, response.text
    bad = await harness.client.put("/v1/notifications/preferences", headers=headers, json={"timezone": "Mars/Base", "quiet_start": "25:00"})
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {"timezone", "quiet_start"}
    note = Notification(
        recipient="department:finance",
        category="billing.payment_failed",
        template="billing.payment_failed",
        params={"invoice_id": "in_<1>", "amount": "BRL 29.00", "tenant_id": "t1", "attempt_count": 1, "final": False},
        dedup_key="in_1:1",
    )
    await harness.kernel.notify(note)
    await harness.kernel.notify(note)
    await wait_until(lambda: len(channel.sent) >= 2, timeout=10)
    by_person = {d.recipient.user_id: d for d in channel.sent}
    assert by_person[pt].subject == "Falha no pagamento da fatura in_<1>"
    assert by_person[en].subject == "Payment failed for invoice in_<1>"
    assert "in_&lt;1&gt;" not in by_person[en].text and "BRL 29.00" in by_person[en].html

    async def settled():
        return sorted(status for _, _, status in await statuses(harness)) == ["deduplicated", "deduplicated", "sent", "sent"]

    await wait_until(settled, timeout=10)
    assert len(channel.sent) == 2


async def test_failures_are_retried_then_dead_lettered_and_operators_retry_them(make_staff_kernel):
    channel = RecordingChannel()
    channel.failures = 2
    harness = await make_staff_kernel(plugins={"channel": ChannelPlugin(channel)}, notifications={"max_attempts": 3})
    user = await add_staff(harness, "ana@example.com", {"configuration": "manager"})
    await harness.kernel.notify(Notification(recipient=f"user:{user}", subject="flaky", body="x"))

    async def sent():
        return await statuses(harness) == [("test", user, "sent")]

    await wait_until(sent, timeout=10)
    async with harness.kernel.database().session(system=True) as session:
        row = (await session.execute(sa.select(deliveries))).one()
    assert row.attempts == 3 and len(channel.sent) == 1

    channel.failures = 3
    await harness.kernel.notify(Notification(recipient=f"user:{user}", subject="dead", body="x"))

    async def dead():
        return [s for s in await statuses(harness) if s[2] == "dead"]

    await wait_until(dead, timeout=10)
    headers = await token_for(harness, "ana@example.com")
    listed = (await harness.client.get("/v1/admin/notifications/deliveries?status=dead", headers=headers)).json()
    assert len(listed) == 1 and listed[0]["attempts"] == 3
    assert (await harness.client.get("/v1/admin/notifications/deliveries?status=nope", headers=headers)).status_code == 422
    retried = await harness.client.post(f"/v1/admin/notifications/deliveries/{listed[0]['id']}/retry", headers=headers)
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    await wait_until(lambda: [d for d in channel.sent if d.subject == "dead"], timeout=10)
    again = await harness.client.post(f"/v1/admin/notifications/deliveries/{listed[0]['id']}/retry", headers=headers)
    assert again.status_code == 409
    other = await add_staff(harness, "viewer@example.com", {"finance": "viewer"})
    assert other
    forbidden = await harness.client.get("/v1/admin/notifications/deliveries", headers=await token_for(harness, "viewer@example.com"))
    assert forbidden.status_code == 403


async def test_preferences_choose_channels_and_quiet_hours_spare_critical_alerts(make_staff_kernel):
    mail, chat = RecordingChannel("mail"), RecordingChannel("chat")
    harness = await make_staff_kernel(plugins={"channel": ChannelPlugin(mail, chat)})
    user = await add_staff(harness, "ana@example.com", {"finance": "member"})
    headers = await token_for(harness, "ana@example.com")
    prefs = {"timezone": "UTC", "quiet_start": "00:00", "quiet_end": "23:59", "channels": {"billing.*": ["mail"], "*": ["mail", "chat"]}}
    assert (await harness.client.put("/v1/notifications/preferences", headers=headers, json=prefs)).status_code == 200
    await harness.kernel.notify(Notification(recipient=f"user:{user}", subject="quiet", body="x", category="agent.report"))
    await harness.kernel.notify(Notification(recipient=f"user:{user}", subject="loud", body="x", category="billing.x", severity="critical"))
    await wait_until(lambda: mail.sent, timeout=10)

    expected = sorted([("mail", user, "suppressed"), ("chat", user, "suppressed"), ("mail", user, "sent"), ("chat", user, "suppressed")])

    async def settled():
        return sorted(await statuses(harness)) == expected

    await wait_until(settled, timeout=10)
    assert [d.subject for d in mail.sent] == ["loud"] and chat.sent == []
    inbox = (await harness.client.get("/v1/notifications", headers=headers)).json()
    assert {i["subject"] for i in inbox["items"]} == {"quiet", "loud"}  # the inbox keeps everything


async def test_a_burst_past_the_flood_cap_folds_into_one_digest(make_staff_kernel):
    channel = RecordingChannel(group_departments=True)
    harness = await make_staff_kernel(plugins={"channel": ChannelPlugin(channel)}, notifications={"flood_cap": 3, "flood_window": 2.0})
    for number in range(8):
        await harness.kernel.notify(Notification(recipient="department:security", subject=f"alert {number}", body="x"))
    await wait_until(lambda: any(d.notification.category == "digest" for d in channel.sent), timeout=10)
    subjects = [d.subject for d in channel.sent]
    assert subjects[:3] == ["alert 0", "alert 1", "alert 2"]
    digest = channel.sent[3]
    assert digest.subject == "5 notificações" and all(f"alert {n}" in digest.text for n in range(3, 8))
    assert len(channel.sent) == 4


async def test_refused_deliveries_fail_without_retry(make_staff_kernel):
    channel = RecordingChannel()
    channel.refuse_without_email = True
    harness = await make_staff_kernel(plugins={"channel": ChannelPlugin(channel)})
    user = await add_staff(harness, "ana@example.com", {"finance": "member"})
    await harness.kernel.notify(Notification(recipient="department:finance", subject="x", body="x"))

    async def settled():
        return await statuses(harness) == [("test", user, "sent")]

    await wait_until(settled, timeout=10)
    assert len(channel.sent) == 1


async def test_a_sign_in_from_a_new_address_tells_the_owner_the_address_and_the_device(make_staff_kernel):
    channel = RecordingChannel()
    harness = await make_staff_kernel(plugins={"channel": ChannelPlugin(channel)}, auth={"trusted_proxies": ["127.0.0.1/32"]})
    await add_staff(harness, "ana@example.com", {"finance": "member"})
    await token_for(harness, "ana@example.com")  # the first address is not news
    headers = {"X-Forwarded-For": "198.51.100.7", "User-Agent": "Safari/18 (iPhone)"}
    response = await harness.client.post("/v1/auth/login", json={"email": "ana@example.com", "password": PASSWORD}, headers=headers)
    assert response.status_code == 200
    await wait_until(lambda: [d for d in channel.sent if d.notification.category == "auth.new_device"], timeout=10)
    (delivery,) = [d for d in channel.sent if d.notification.category == "auth.new_device"]
    assert "198.51.100.7" in delivery.text and "Safari/18 (iPhone)" in delivery.text
