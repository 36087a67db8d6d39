"""Two worker processes on one PostgreSQL database: one getUpdates poller at a time (a lease), every notification sent once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

import botcriptofy_auth
import botcriptofy_storage
from botcriptofy import Notification, NotificationRequested
from botcriptofy.testing import render_settings, wait_until
from botcriptofy_auth._accounts import create_staff
from botcriptofy_telegram._models import links

from .conftest import FAST, TOKEN

WORKER = Path(__file__).with_name("staff_worker.py")
OTHERS = ["billing", "cache", "ratelimit", "observability", "email"]


async def test_two_processes_poll_once_and_send_each_notification_once(postgres_url, botapi, kernel_harness, tmp_path):
    url = postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "auth": botcriptofy_auth},
        settings={
            "storage": {"url": url, "relay_enabled": False},
            "auth": {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1},
        },
    )
    user = await create_staff(
        harness.kernel, email="ana@example.com", name="Ana", password="correct horse battery staple", roles={"finance": "member"}, by="test"
    )
    settings_dir = tmp_path / "workers"
    settings_dir.mkdir()
    (settings_dir / "settings.toml").write_text(
        render_settings(
            {
                "plugins": {"disabled": OTHERS},
                "storage": {"url": url, "relay_poll_interval": 0.05},
                "auth": {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1},
                "notifications": {"poll_interval": 0.05, "flood_cap": 1000},
                "telegram": {"bot_token": TOKEN, "api_base": botapi.url, **FAST, "departments": {"finance": {"chat_id": -300}}},
            },
            state_dir=tmp_path / "state",
        )
    )
    logs = [open(tmp_path / f"worker-{n}.log", "wb") for n in range(2)]  # noqa: SIM115 - closed in finally
    workers = [subprocess.Popen([sys.executable, str(WORKER), str(settings_dir)], stdout=subprocess.PIPE, stderr=log) for log in logs]
    try:
        for worker in workers:
            line = await asyncio.to_thread(worker.stdout.readline)
            assert line.strip() == b"ready", (tmp_path / "worker-0.log").read_text()[-3000:]
        async with harness.kernel.database().session(system=True) as session:
            await session.execute(sa.insert(links).values(user_id=user.id, telegram_user_id=111, chat_id=111, linked_at=datetime.now(UTC)))
        for number in range(20):
            for address in ("department:finance", f"user:{user.id}"):
                note = Notification(recipient=address, subject=f"n{number:02}", body="x")
                await harness.kernel.events.publish(NotificationRequested(notification=note.to_dict()))
        await wait_until(lambda: len(botapi.texts(-300)) == 20 and len(botapi.texts(111)) == 20, timeout=60)
        botapi.push(botapi.message(111, "/whoami"))
        await wait_until(lambda: len(botapi.texts(111)) == 21, timeout=20)
        await asyncio.sleep(1.5)  # room for a duplicate to show up
        # Each exactly once. (Two relays route side by side, so order across them is by routing, not by publishing.)
        assert sorted(t.split("\n")[0] for t in botapi.texts(-300)) == [f"<b>n{n:02}</b>" for n in range(20)]
        assert sorted(t.split("\n")[0] for t in botapi.texts(111)[:20]) == [f"<b>n{n:02}</b>" for n in range(20)]
        assert len(botapi.texts(111)) == 21 and botapi.texts(111)[20].startswith("Ana")
        assert botapi.conflicts == 0 and len(botapi.of("getUpdates")) >= 2
        assert all(worker.poll() is None for worker in workers)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                await asyncio.to_thread(worker.wait, 20)
            except subprocess.TimeoutExpired:
                worker.kill()
                await asyncio.to_thread(worker.wait, 5)
            worker.stdout.close()
        for log in logs:
            log.close()
