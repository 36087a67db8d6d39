"""Deadlines and reminders: on the workflows plugin's schedule when it runs, in-process without it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from botcriptofy import Notification, hookimpl
from botcriptofy.testing import wait_until
from botcriptofy_lgpd import _requests
from botcriptofy_workflows import WorkflowsPlugin
from botcriptofy_workflows._state import ENGINE
from support import signup

pytestmark = pytest.mark.timeout(120)

FAST = {"retry_initial_interval": 0.01, "retry_maximum_interval": 0.05, "watch_interval": 0.05, "graceful_shutdown": 2}


class Notes:
    """A test channel plugin in place of the notifications plugin: records every notification (the DPO's reminders among them)."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []

    @hookimpl
    def send_notification(self, kernel: Any, notification: Notification) -> None:
        if not notification.recipient.startswith("account-mail:"):  # the sign-up's verification e-mail is not the DPO's
            self.notifications.append(notification)


async def _open_correction(harness: Any) -> str:
    ana = await signup(harness.client, "ana@example.com")
    created = await harness.client.post("/v1/privacy/corrections", json={"fields": {"name": "Ana Maria"}}, headers=ana["headers"])
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


async def _deadline(kernel: Any, request_id: str, delta: timedelta) -> None:
    async with kernel.database().session(system=True) as session:
        await session.execute(
            sa.update(_requests.requests).where(_requests.requests.c.id == request_id).values(deadline_at=_requests.utcnow() + delta)
        )


async def _flag(kernel: Any, request_id: str, column: str) -> bool:
    row = await _requests.get(kernel, request_id)
    return bool(row and row[column])


@pytest.mark.slow
async def test_with_the_workflows_plugin_the_dpo_is_reminded_and_overdue_requests_flagged_by_the_schedule(make_privacy):
    notes = Notes()
    harness = await make_privacy(
        plugins={"workflows": WorkflowsPlugin(), "notes": notes, "notifications": None},
        workflows=dict(FAST),
        lgpd={"sweep_interval": 1, "reminder_days": 3},
    )
    kernel = harness.kernel
    engine = kernel.stash[ENGINE]
    assert engine.registry.schedules["lgpd.deadlines"][0] == "lgpd"
    assert (await harness.client.get("/-/ready")).status_code == 200
    request_id = await _open_correction(harness)

    await _deadline(kernel, request_id, timedelta(days=1))
    await wait_until(lambda: notes.notifications, timeout=30)
    assert await _flag(kernel, request_id, "reminded")
    assert [n.subject for n in notes.notifications] == ["Privacy request deadline near"]
    assert notes.notifications[0].recipient == "department:audit"

    await _deadline(kernel, request_id, timedelta(days=-1))
    await wait_until(lambda: len(notes.notifications) == 2, timeout=30)
    assert notes.notifications[-1].subject == "Privacy request overdue" and await _flag(kernel, request_id, "overdue_flagged")
    row = await _requests.get(kernel, request_id)
    assert row is not None and [s["step"] for s in row["steps"]].count("overdue") == 1

    # The engine did it: the schedule's runs report the reminder and the flag, and the in-process loop stood idle.
    description = await engine.client.get_schedule_handle("lgpd.deadlines").describe()
    results = [await engine.client.get_workflow_handle(a.action.workflow_id).result() for a in description.info.recent_actions]
    assert sum(r["reminded"] for r in results) == 1 and sum(r["overdue"] for r in results) == 1


async def test_without_the_workflows_plugin_the_in_process_sweep_flags_overdue_requests(make_privacy):
    notes = Notes()
    harness = await make_privacy(plugins={"notes": notes, "notifications": None}, lgpd={"sweep_interval": 0.05})
    kernel = harness.kernel
    assert await kernel.broadcast("register_schedules", kernel=kernel) == {"lgpd": []}
    ready = await harness.client.get("/-/ready")
    assert ready.status_code == 200 and "core.schedules" not in ready.json()["checks"]
    request_id = await _open_correction(harness)
    await _deadline(kernel, request_id, timedelta(days=-1))
    await wait_until(lambda: notes.notifications, timeout=10)
    assert [n.subject for n in notes.notifications] == ["Privacy request overdue"]
    assert await _flag(kernel, request_id, "overdue_flagged")
