"""Staff commands over HTTP: listing by permission, RBAC refusal, argument errors, hot reload, approvals for /config rollback."""

from __future__ import annotations

from pydantic import BaseModel, Field

from botcriptofy import CommandReply, Notification, StaffCommand, hookimpl
from botcriptofy.testing import MemoryApprovals, wait_until
from botcriptofy_billing._events import PaymentFailed
from botcriptofy_billing._money import Money

from .conftest import ChannelPlugin, RecordingChannel, add_staff, token_for


class PingArguments(BaseModel):
    times: int = Field(ge=1, le=5)
    word: str = "pong"


class Pinger:
    @hookimpl
    def register_staff_commands(self, kernel):
        async def ping(context):
            return CommandReply(" ".join([context.arguments.word] * context.arguments.times))

        return [StaffCommand("ping", {"pt-BR": "Responde", "en": "Answers"}, ping, permission="finance:read", arguments=PingArguments)]


async def test_commands_are_listed_by_permission_and_checked_before_running(make_staff_kernel):
    harness = await make_staff_kernel(plugins={"pinger": Pinger()})
    await add_staff(harness, "fin@example.com", {"finance": "viewer"})
    await add_staff(harness, "ops@example.com", {"configuration": "viewer"})
    finance, ops = await token_for(harness, "fin@example.com"), await token_for(harness, "ops@example.com")

    names = [c["name"] for c in (await harness.client.get("/v1/staff/commands", headers=finance)).json()]
    assert names == ["help", "ping", "whoami"]
    listed = (await harness.client.get("/v1/staff/commands", headers={**ops, "Accept-Language": "en"})).json()
    assert [c["name"] for c in listed] == ["config", "health", "help", "plugins", "whoami"]
    assert listed[0]["usage"] == "/config [action] [version]" and listed[2]["description"] == "Commands I may run"
    assert (await harness.client.get("/v1/staff/commands")).status_code == 401

    refused = await harness.client.post("/v1/staff/commands/health", headers=finance, json={})
    assert refused.status_code == 403 and "configuration:read" in refused.json()["detail"]
    ran = await harness.client.post("/v1/staff/commands/ping", headers=finance, json={"arguments": {"times": 2}})
    assert ran.status_code == 200 and ran.json()["text"] == "pong pong"
    bad = await harness.client.post("/v1/staff/commands/ping", headers=finance, json={"arguments": {"times": 9}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "times" and "Usage: /ping <times> [word]" in bad.json()["detail"]
    assert (await harness.client.post("/v1/staff/commands/nope", headers=finance, json={})).status_code == 404
    assert (await harness.client.post("/v1/staff/commands/whoami", headers=finance, json={"arguments": {"x": 1}})).status_code == 422
    me = (await harness.client.post("/v1/staff/commands/whoami", headers=finance, json={})).json()
    assert me["data"]["roles"] == {"finance": "viewer"}
    health = (await harness.client.post("/v1/staff/commands/health", headers=ops, json={"locale": "en"})).json()
    assert health["data"]["healthy"] is True and "storage.database" in health["data"]["checks"]

    result = await harness.apply({**_settings(harness), "plugins": {"disabled": ["pinger"]}})
    assert result.applied, result.error
    names = [c["name"] for c in (await harness.client.get("/v1/staff/commands", headers=finance)).json()]
    assert names == ["help", "whoami"]


def _settings(harness):
    import tomllib

    return tomllib.loads((harness.settings_dir / "settings.toml").read_text())["default"]


async def test_config_rollback_only_creates_an_approval(make_staff_kernel):
    approvals = MemoryApprovals()
    harness = await make_staff_kernel(plugins={"approvals": approvals})
    await add_staff(harness, "ops@example.com", {"configuration": "viewer"})
    headers = await token_for(harness, "ops@example.com")
    history = (await harness.client.post("/v1/staff/commands/config", headers=headers, json={})).json()
    assert history["data"]["versions"] == [1]
    missing = await harness.client.post("/v1/staff/commands/config", headers=headers, json={"arguments": {"action": "rollback"}})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "version"
    made = await harness.client.post("/v1/staff/commands/config", headers=headers, json={"arguments": {"action": "rollback", "version": 1}})
    assert made.status_code == 200
    request = approvals.requests[made.json()["data"]["approval_id"]]
    assert (request.action, request.department, request.destructive, request.payload) == (
        "config.rollback",
        "configuration",
        True,
        {"version": 1},
    )


async def test_billing_events_become_notifications_for_the_customer_and_finance(make_staff_kernel):
    channel = RecordingChannel()
    harness = await make_staff_kernel(plugins={"channel": ChannelPlugin(channel)})
    finance = await add_staff(harness, "fin@example.com", {"finance": "member"})
    signup = await harness.client.post(
        "/v1/auth/signup",
        json={"email": "trader@example.com", "password": "correct horse battery staple", "name": "T", "account_type": "trader"},
    )
    trader, tenant = signup.json()["user"]["id"], signup.json()["tenant"]["id"]
    event = PaymentFailed(
        tenant_id=tenant,
        invoice_id="in_9",
        subscription_id=None,
        amount_due=Money.of("29.00", "BRL"),
        attempt_count=1,
        next_payment_attempt=None,
        final=False,
    )
    await harness.kernel.events.publish(event, tenant_id=tenant)
    await harness.kernel.events.publish(event, tenant_id=tenant)  # a replay reaches nobody twice
    await wait_until(lambda: {d.recipient.user_id for d in channel.sent} == {trader, finance}, timeout=15)
    assert all(d.subject == "Falha no pagamento da fatura in_9" and "BRL 29.00" in d.text for d in channel.sent)
    headers = {"Authorization": f"Bearer {signup.json()['tokens']['access_token']}"} if "tokens" in signup.json() else None
    assert headers is None or (await harness.client.get("/v1/notifications", headers=headers)).json()["unread"] == 1
    await harness.kernel.notify(Notification(recipient="department:finance", subject="extra", body="x"))
    await wait_until(lambda: len(channel.sent) == 3, timeout=10)
    assert len(channel.sent) == 3


async def test_without_a_router_notify_calls_send_notification(kernel_harness):
    got = []

    class Legacy:
        @hookimpl
        def send_notification(self, kernel, notification):
            got.append(notification.subject)

    harness = await kernel_harness(plugins={"legacy": Legacy()})
    await harness.kernel.notify(Notification(recipient="user:1", subject="hi", body="x"))
    assert got == ["hi"]
