"""What ``kernel.notify(..., session=...)`` does inside a request: one outbox row, nothing else, until the commit."""

from __future__ import annotations

import sqlalchemy as sa

from botcriptofy import Notification, ProblemError, Route, hookimpl, kernel_of
from botcriptofy.testing import wait_until
from botcriptofy_notifications._models import deliveries, inbox
from botcriptofy_storage._outbox import events

from .conftest import ChannelPlugin, RecordingChannel, add_staff


class Watcher:
    """Counts address resolutions (passing them on to auth) and offers a route that notifies in its transaction."""

    def __init__(self) -> None:
        self.resolved: list[str] = []
        self.seen_in_request: dict[str, int] = {}

    @hookimpl(tryfirst=True)
    def resolve_recipients(self, kernel, address):
        self.resolved.append(address)

    @hookimpl
    def register_routes(self, kernel):
        async def notify(request):
            k = kernel_of(request)
            async with k.database().session(system=True, write_lock=True) as session:  # it reads, then writes
                before = (await session.execute(sa.select(sa.func.count()).select_from(events))).scalar_one()
                await k.notify(Notification(recipient="department:finance", subject="Fatura", body="paga"), session=session)
                after = (await session.execute(sa.select(sa.func.count()).select_from(events))).scalar_one()
                self.seen_in_request = {
                    "outbox_rows_added": after - before,
                    "resolved": len(self.resolved),
                    "deliveries": (await session.execute(sa.select(sa.func.count()).select_from(deliveries))).scalar_one(),
                    "inbox": (await session.execute(sa.select(sa.func.count()).select_from(inbox))).scalar_one(),
                }
                if request.query_params.get("fail"):
                    raise ProblemError(409, "Conflict", "The change is refused; the transaction rolls back.")
            return {"ok": True}

        return [Route("/test/notify", notify, methods=["POST"])]


async def test_notify_in_a_request_is_one_outbox_row_and_routing_happens_after_commit(make_staff_kernel):
    watcher, channel = Watcher(), RecordingChannel()
    harness = await make_staff_kernel(plugins={"watcher": watcher, "channel": ChannelPlugin(channel)})
    finance = await add_staff(harness, "fin@example.com", {"finance": "member"})
    watcher.resolved.clear()

    assert (await harness.client.post("/test/notify")).status_code == 200
    # In the request: the outbox row only; nobody resolved, nothing rendered, no delivery or inbox row.
    assert watcher.seen_in_request == {"outbox_rows_added": 1, "resolved": 0, "deliveries": 0, "inbox": 0}
    await wait_until(lambda: [d.recipient.user_id for d in channel.sent] == [finance], timeout=15)
    assert watcher.resolved == ["department:finance"]  # resolved once, by the router after the commit

    response = await harness.client.post("/test/notify?fail=1")
    assert response.status_code == 409 and watcher.seen_in_request["outbox_rows_added"] == 1
    await harness.client.post("/test/notify")
    await wait_until(lambda: len(channel.sent) == 2, timeout=15)
    assert len(watcher.resolved) == 2  # the rolled-back notification was never routed
