"""Trading's staff commands over ``POST /v1/staff/commands/{name}``: ``/bots [tenant]`` and ``/bot <id> stop|pause|show``,
with real staff accounts (``botops:read``: support and configuration viewers; ``botops:operate``: support managers,
configuration members), on SQLite and PostgreSQL. Stopping or pausing a bot is audited, a refusal too."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

import botcriptofy_auth
import botcriptofy_exchanges
import botcriptofy_notifications
import botcriptofy_storage
import botcriptofy_trading
from botcriptofy import hookimpl
from botcriptofy_auth._accounts import create_staff
from botcriptofy_billing import BillingPlugin
from botcriptofy_trading import _bots
from support import FAST_HASH, STRONG_PASSWORD
from support import trader_signup as signup


class AuditRecorder:
    def __init__(self) -> None:
        self.records: list[Any] = []

    @hookimpl
    def record_audit(self, kernel: Any, record: Any) -> None:
        self.records.append(record)


@pytest.fixture
async def staff_trading(kernel_harness: Any, database_url: str) -> Any:
    recorder = AuditRecorder()
    plugins = {
        "storage": botcriptofy_storage,
        "auth": botcriptofy_auth,
        "notifications": botcriptofy_notifications,
        "billing": BillingPlugin(),
        "exchanges": botcriptofy_exchanges,
        "trading": botcriptofy_trading,
        "audit": recorder,
    }
    settings = {
        "storage": {"url": database_url, "relay_poll_interval": 0.05},
        "auth": FAST_HASH,
        "notifications": {"poll_interval": 0.05},
    }
    harness = await kernel_harness(plugins=plugins, settings=settings)
    harness.audit = recorder
    return harness


async def staff(harness: Any, email: str, roles: dict[str, str]) -> tuple[str, dict[str, str]]:
    user = await create_staff(harness.kernel, email=email, name="Staff", password=STRONG_PASSWORD, roles=roles, by="test")
    response = await harness.client.post("/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD})
    assert response.status_code == 200, response.text
    return str(user.id), {"Authorization": f"Bearer {response.json()['access_token']}"}


async def run(harness: Any, headers: dict[str, str], name: str, **arguments: Any) -> Any:
    return await harness.client.post(f"/v1/staff/commands/{name}", headers=headers, json={"arguments": arguments, "locale": "en"})


async def trader_with_bots(harness: Any, email: str, count: int, running: int) -> tuple[str, list[str]]:
    """A trader with ``count`` bots (the Free plan allows one), ``running`` of them marked running (no engine: ticks are not the point)."""
    headers, body = await signup(harness.client, email)
    tenant = body["tenant"]["id"]
    account = await harness.client.post("/v1/trading/accounts", headers=headers, json={"exchange": "paper", "label": "p"})
    assert account.status_code == 201, account.text
    ids = []
    for number in range(count):
        body = {
            "name": f"bot-{number}",
            "strategy": "sma_crossover",
            "account_id": account.json()["id"],
            "symbol": "BTC/USDT",
            "timeframe": "1m",
            "order_amount": "1",
            "max_position": "1",
        }
        created = await _bots.create_bot(harness.kernel, tenant, body)
        ids.append(created["id"])
    async with harness.kernel.database().session(tenant_id=tenant) as session:
        await session.execute(sa.update(_bots.bots).where(_bots.bots.c.id.in_(ids[:running])).values(status="running", run=1))
    return tenant, ids


async def outbox(kernel: Any) -> list[tuple[str, Any]]:
    import json

    async with kernel.database().session(system=True) as session:
        rows = (await session.execute(sa.text("SELECT type, payload FROM botcriptofy_outbox ORDER BY created_at"))).all()
    return [(kind, json.loads(payload) if isinstance(payload, str) else payload) for kind, payload in rows]


async def test_staff_see_bots_by_status_and_by_tenant_and_operators_stop_or_pause_them_audited(staff_trading: Any) -> None:
    harness = staff_trading
    tenant, (one,) = await trader_with_bots(harness, "ana@example.com", 1, 1)
    _, viewer = await staff(harness, "sac@example.com", {"support": "viewer"})
    manager_id, manager = await staff(harness, "lead@example.com", {"support": "manager"})
    _, finance = await staff(harness, "fin@example.com", {"finance": "manager"})

    # Listed with their permission and usage; a finance manager holds neither permission.
    listed = {c["name"]: c for c in (await harness.client.get("/v1/staff/commands", headers={**viewer, "Accept-Language": "en"})).json()}
    assert listed["bots"]["permission"] == "botops:read" and listed["bot"]["permission"] == "botops:read"
    assert "bots" not in {c["name"] for c in (await harness.client.get("/v1/staff/commands", headers=finance)).json()}
    for name, arguments in (("bots", {}), ("bot", {"bot_id": one})):
        refused = await run(harness, finance, name, **arguments)
        assert refused.status_code == 403 and "botops:read" in refused.json()["detail"], refused.text

    counted = await run(harness, viewer, "bots")
    assert counted.status_code == 200, counted.text
    assert counted.json()["data"] == {"counts": {"running": 1}, "bots": []}
    assert counted.json()["text"] == "1 bot(s): running 1"
    by_tenant = (await run(harness, viewer, "bots", tenant=tenant)).json()
    assert by_tenant["data"]["bots"] == [{"id": one, "name": "bot-0", "status": "running", "symbol": "BTC/USDT"}]
    assert by_tenant["text"].splitlines()[0] == f"Tenant {tenant}: 1 bot(s): running 1"
    assert (await run(harness, viewer, "bots", tenant="nobody")).json()["data"] == {"counts": {}, "bots": []}

    shown = (await run(harness, viewer, "bot", bot_id=one)).json()
    assert shown["data"] == {"found": True, "tenant_id": tenant, "status": "running"}
    assert shown["text"] == f"Bot {one} bot-0 (BTC/USDT, tenant {tenant}): running"
    assert (await run(harness, viewer, "bot", bot_id="missing")).json()["data"] == {"found": False}
    bad = await run(harness, viewer, "bot", bot_id=one, action="delete")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "action"
    missing = await run(harness, viewer, "bot")
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "bot_id"

    # A viewer may look but not stop: refused naming botops:operate, the bot untouched, the refusal audited.
    for action in ("stop", "pause"):
        denied = await run(harness, viewer, "bot", bot_id=one, action=action)
        assert denied.status_code == 403 and "botops:operate" in denied.json()["detail"], denied.text
    assert (await _bots.get_row(harness.kernel, tenant, one)).status == "running"
    refusals = [r for r in harness.audit.records if r.action.startswith("trading.bot_") and r.outcome == "denied"]
    assert [(r.action, r.target) for r in refusals] == [("trading.bot_stop", f"bot:{one}"), ("trading.bot_pause", f"bot:{one}")]

    paused = (await run(harness, manager, "bot", bot_id=one, action="pause")).json()
    assert paused["data"]["status"] == "paused"
    stopped = (await run(harness, manager, "bot", bot_id=one, action="stop")).json()
    assert stopped["data"]["status"] == "stopped"
    row = await _bots.get_row(harness.kernel, tenant, one)
    assert (row.status, row.stop_reason) == ("stopped", "staff")
    assert [p["reason"] for t, p in await outbox(harness.kernel) if t == "trading.bot_stopped"] == ["staff"]
    done = [r for r in harness.audit.records if r.action.startswith("trading.bot_") and r.outcome == "success"]
    assert [(r.action, r.actor_id, r.target) for r in done] == [
        ("trading.bot_pause", manager_id, f"bot:{one}"),
        ("trading.bot_stop", manager_id, f"bot:{one}"),
    ]
    assert done[0].details == {"channel": "http", "bot_tenant_id": tenant, "status": "paused"}


async def test_configuration_members_operate_and_configuration_viewers_only_read(staff_trading: Any) -> None:
    harness = staff_trading
    tenant, (one,) = await trader_with_bots(harness, "bia@example.com", 1, 1)
    _, reader = await staff(harness, "cfg-view@example.com", {"configuration": "viewer"})
    _, operator = await staff(harness, "cfg@example.com", {"configuration": "member"})
    assert (await run(harness, reader, "bot", bot_id=one, action="stop")).status_code == 403
    assert (await run(harness, operator, "bot", bot_id=one, action="stop")).json()["data"]["status"] == "stopped"
    # Stopping a stopped bot answers with it; pausing it is a conflict named as such.
    assert (await run(harness, operator, "bot", bot_id=one, action="stop")).json()["data"]["status"] == "stopped"
    conflict = await run(harness, operator, "bot", bot_id=one, action="pause")
    assert conflict.status_code == 409 and "stopped" in conflict.json()["detail"]
    assert (await run(harness, reader, "bots", tenant=tenant)).json()["data"]["counts"] == {"stopped": 1}
