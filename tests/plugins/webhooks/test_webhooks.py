"""Outbound webhooks: signed per Standard Webhooks, 500 then 200 retried, loopback refused by default, disabled after giving up."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

import botcriptofy_auth
import botcriptofy_storage
import botcriptofy_webhooks
from botcriptofy import Entitlements, Event, hookimpl
from botcriptofy.testing import wait_until


class OrderFilled(Event):
    event_type = "trading.order_filled_test"

    order_id: str


class Plans:
    def __init__(self, features: frozenset[str]) -> None:
        self.features = features
        self.notified: list = []

    @hookimpl
    def entitlements_for(self, kernel, tenant_id):
        return Entitlements(plan="pro" if self.features else "free", limits={}, features=self.features)

    @hookimpl
    def send_notification(self, kernel, notification):
        self.notified.append(notification)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()

        async def hook(request: web.Request) -> web.Response:
            self.requests.append((dict(request.headers), await request.read()))
            return web.Response(status=self.answers.pop(0) if self.answers else 200)

        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def trader(harness):
    response = await harness.client.post(
        "/v1/auth/signup",
        json={"email": "t@example.com", "password": "correct horse battery staple", "name": "T", "account_type": "trader"},
    )
    body = response.json()
    return body["tenant"]["id"], {"Authorization": f"Bearer {body['tokens']['access_token']}"}


async def make(kernel_harness, database_url, plans, **webhooks):
    plugins = {"storage": botcriptofy_storage, "auth": botcriptofy_auth, "webhooks": botcriptofy_webhooks, "plans": plans}
    return await kernel_harness(
        plugins=plugins,
        settings={
            "storage": {"url": database_url, "relay_poll_interval": 0.05},
            "auth": {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1},
            "webhooks": {"poll_interval": 0.05, "retry_base": 0.05, "retry_max": 0.2, **webhooks},
        },
    )


async def test_signed_delivery_retried_after_500(database_url, kernel_harness):
    receiver = Receiver([500])
    await receiver.start()
    try:
        harness = await make(kernel_harness, database_url, Plans(frozenset({"webhooks"})), allow_private_targets=True)
        tenant, headers = await trader(harness)
        bad = await harness.client.post("/v1/webhooks/endpoints", headers=headers, json={"url": "ftp://x"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "url"
        created = await harness.client.post(
            "/v1/webhooks/endpoints", headers=headers, json={"url": receiver.url, "event_types": ["trading.*"]}
        )
        assert created.status_code == 201
        endpoint, secret = created.json()["id"], created.json()["secret"]
        assert "secret" not in (await harness.client.get("/v1/webhooks/endpoints", headers=headers)).json()[0]
        await harness.kernel.events.publish(OrderFilled(order_id="o1"), tenant_id=tenant)
        await wait_until(lambda: len(receiver.requests) == 2, timeout=15)
        for request_headers, body in receiver.requests:
            payload = Webhook(secret).verify(body, {k.lower(): v for k, v in request_headers.items()})
            assert payload["type"] == "trading.order_filled_test" and payload["data"] == {"order_id": "o1"}
        assert receiver.requests[0][0]["webhook-id"] == receiver.requests[1][0]["webhook-id"]  # the same message, retried

        async def delivered():
            listed = (await harness.client.get(f"/v1/webhooks/endpoints/{endpoint}/deliveries", headers=headers)).json()
            return listed and listed[0]["status"] == "delivered" and listed[0]["attempts"] == 2 and listed[0]["last_status"] == 200

        await wait_until(delivered, timeout=10)
        metrics = harness.kernel.metrics
        assert metrics.get_sample_value("botcriptofy_webhook_deliveries_total", {"result": "delivered"}) >= 1
        assert metrics.get_sample_value("botcriptofy_webhook_deliveries_total", {"result": "failed"}) >= 1
    finally:
        await receiver.stop()


async def test_loopback_refused_by_default_then_endpoint_disabled_and_owner_told(database_url, kernel_harness):
    receiver = Receiver([])
    await receiver.start()
    try:
        plans = Plans(frozenset({"webhooks"}))
        harness = await make(kernel_harness, database_url, plans, give_up_after=0.5)
        tenant, headers = await trader(harness)
        endpoint = (await harness.client.post("/v1/webhooks/endpoints", headers=headers, json={"url": receiver.url})).json()["id"]
        await harness.kernel.events.publish(OrderFilled(order_id="o2"), tenant_id=tenant)

        async def failed():
            listed = (await harness.client.get(f"/v1/webhooks/endpoints/{endpoint}/deliveries", headers=headers)).json()
            return listed and listed[0]["status"] == "failed"

        await wait_until(failed, timeout=15)
        listed = (await harness.client.get(f"/v1/webhooks/endpoints/{endpoint}/deliveries", headers=headers)).json()
        # Other events of the tenant (its sign-up, relayed meanwhile) may also be queued for the endpoint: the
        # first to give up disables it for loopback, and those after it find it disabled.
        assert any("loopback" in (delivery["last_error"] or "") for delivery in listed), listed
        assert receiver.requests == []
        endpoints = (await harness.client.get("/v1/webhooks/endpoints", headers=headers)).json()
        assert endpoints[0]["enabled"] is False
        told = [(n.recipient, n.category) for n in plans.notified if n.category.startswith("webhooks.")]  # not the sign-up's mail
        assert told == [(f"tenant:{tenant}", "webhooks.endpoint_disabled")]
        assert harness.kernel.metrics.get_sample_value("botcriptofy_webhook_deliveries_total", {"result": "gave_up"}) >= 1
    finally:
        await receiver.stop()


async def test_free_plan_has_no_webhooks(database_url, kernel_harness):
    harness = await make(kernel_harness, database_url, Plans(frozenset()))
    _, headers = await trader(harness)
    refused = await harness.client.post("/v1/webhooks/endpoints", headers=headers, json={"url": "https://example.com/h"})
    assert refused.status_code == 403 and refused.json()["upgrade_to"] == "pro"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_wake_up_arriving_with_the_stop_does_not_keep_the_sender_alive(database_url, kernel_harness):
    from botcriptofy_webhooks._sender import Sender

    harness = await make(kernel_harness, database_url, Plans(frozenset({"webhooks"})), poll_interval=30.0)
    # A delivery queued (the event handler wakes the sender) as the plugin stops: on Python 3.11,
    # asyncio.wait_for swallowed that cancellation and the shutdown waited for ever.
    for turns in range(6):
        sender = Sender(harness.kernel)
        sender.start()
        await asyncio.sleep(0.3)  # one empty round, then idle until woken
        task = sender.task
        assert task is not None
        sender.wakeup.set()
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()  # what stop() does, once, in this very turn; then it waits for the loop to end
        await asyncio.wait([task], timeout=5)
        if not task.done():
            task.cancel()
            pytest.fail(f"the sender outlived its stop (wake-up {turns} turns before)")
        await sender.stop()
