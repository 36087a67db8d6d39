"""With no bot token (or ``mode = "off"``) the plugin serves its API and refuses deliveries without loading aiogram."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import asyncio, json, sys
from datetime import UTC, datetime
from pathlib import Path

import httpx

import botcriptofy_auth, botcriptofy_notifications, botcriptofy_storage, botcriptofy_telegram
from botcriptofy import ApprovalRequest, Delivery, DeliveryRefused, Notification, Runtime
from botcriptofy.testing import render_settings
from botcriptofy_auth._accounts import create_staff


async def main(directory: Path, mode: str) -> None:
    fast = {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1}
    telegram = {"bot_token": "123456:TEST-token", "mode": "off"} if mode == "off" else {}
    sections = {"storage": {"url": f"sqlite+aiosqlite:///{directory / 'db.sqlite'}"}, "auth": fast, "telegram": telegram}
    (directory / "settings.toml").write_text(render_settings(sections, state_dir=directory / "state"))
    plugins = {"storage": botcriptofy_storage, "auth": botcriptofy_auth}
    plugins.update(notifications=botcriptofy_notifications, telegram=botcriptofy_telegram)
    runtime = Runtime(directory, env="testing", plugins=plugins, discover=False, watch=False)
    await runtime.start()
    out = {"after_start": "aiogram" in sys.modules}
    try:
        kernel = runtime.current
        password = "correct horse battery staple"
        await create_staff(kernel, email="ops@example.com", name="Ops", password=password, roles={"security": "manager"}, by="test")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime), base_url="http://test") as client:
            login = await client.post("/v1/auth/login", json={"email": "ops@example.com", "password": password})
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            out["link"] = (await client.post("/v1/me/telegram/link", headers=headers)).status_code
            out["webhook"] = (await client.post("/v1/telegram/webhook", json={"update_id": 1})).status_code
        channel = botcriptofy_telegram.notification_channels(kernel=kernel)[0]
        notification = Notification(recipient="department:security", subject="Alert", body="b")
        address = "department:security"
        delivery = Delivery(
            id="d1", channel="telegram", address=address, notification=notification, subject="Alert", text="b", html="b", locale="en"
        )
        try:
            await channel.send(delivery)
        except DeliveryRefused as refused:
            out["delivery"] = str(refused)
        now = datetime.now(UTC)
        approval = ApprovalRequest(
            id="a1", action="x", summary="s", department="security", permission="p", requester="r", expires_at=now, created_at=now
        )
        out["approval"] = await botcriptofy_telegram.present_approval(kernel=kernel, approval=approval)
        out["after_use"] = "aiogram" in sys.modules
    finally:
        await runtime.stop()
    print(json.dumps(out))


asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
"""


def _run(tmp_path: Path, mode: str) -> dict[str, object]:
    directory = tmp_path / mode
    directory.mkdir()
    done = subprocess.run([sys.executable, "-c", _CHILD, str(directory), mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_a_token_or_with_mode_off_aiogram_is_never_imported(tmp_path):
    for mode in ("no-token", "off"):
        assert _run(tmp_path, mode) == {
            "after_start": False,
            "link": 201,  # staff can still create a link code
            "webhook": 401,  # not in webhook mode
            "delivery": "the Telegram bot is off (no telegram.bot_token)",  # refused (logged, not retried)
            "approval": None,  # nothing to present
            "after_use": False,
        }
