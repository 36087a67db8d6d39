"""Bots on SQLite and PostgreSQL: paper trading end to end through the workflows plugin, risk limits at their
boundaries and under racing ticks, plan limits, and a runner killed mid-tick resuming without a second order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from temporalio.testing import WorkflowEnvironment

from botcriptofy import Notification, hookimpl
from botcriptofy.testing import render_settings, wait_until
from botcriptofy_exchanges import _candles
from botcriptofy_exchanges._models import orders as exchange_orders
from botcriptofy_trading import Parameters, Strategy, _bots
from botcriptofy_trading._models import bot_fills, bot_orders
from support import FAST_HASH
from support import trader_signup as signup

pytestmark = pytest.mark.timeout(120)

BIN = Path(sys.executable).parent
TEST_SERVER = str(BIN / "temporal-test-server")
TEMPORAL = str(BIN / "temporal")
FAST = {"retry_initial_interval": 0.01, "retry_maximum_interval": 0.05, "watch_interval": 0.05, "graceful_shutdown": 1}


class Scripted(Strategy):
    """Signals looked up by close price: the test writes the script."""

    name = "scripted"
    description = "Test strategy: +1/-1 at the closes the test names."
    Parameters = Parameters
    SCRIPT: ClassVar[dict[float, int]] = {}

    @staticmethod
    def signals(close: np.ndarray, params: Any) -> np.ndarray:
        return np.array([Scripted.SCRIPT.get(float(c), 0) for c in close], dtype=np.int8)


class Probe:
    def __init__(self) -> None:
        self.notifications: list[Notification] = []

    @hookimpl(optionalhook=True)
    def register_strategies(self, kernel: Any) -> list[type[Any]]:
        return [Scripted]

    @hookimpl
    def send_notification(self, kernel: Any, notification: Notification) -> None:
        self.notifications.append(notification)


def plugins(probe: Probe, client: Any = None) -> dict[str, Any]:
    import botcriptofy_auth
    import botcriptofy_exchanges
    import botcriptofy_storage
    import botcriptofy_trading
    from botcriptofy_billing import BillingPlugin

    found = {
        "storage": botcriptofy_storage,
        "auth": botcriptofy_auth,
        "billing": BillingPlugin(),
        "exchanges": botcriptofy_exchanges,
        "trading": botcriptofy_trading,
        "probe": probe,
    }
    if client is not None:
        from botcriptofy_workflows import WorkflowsPlugin

        found["workflows"] = WorkflowsPlugin(client=client)
    return found


def settings(database_url: str, *, engine: bool = False, **trading: Any) -> dict[str, Any]:
    found = {
        "storage": {"url": database_url, "relay_poll_interval": 0.1},
        "auth": FAST_HASH,
        "exchanges": {"paper_fee_rate": 0.001, "paper_slippage_bps": 0},
        "trading": {"bot_poll_seconds": 0.3, **trading},
    }
    if engine:
        found["workflows"] = FAST
    return found


NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def minute(offset: int) -> datetime:
    return NOW + timedelta(minutes=offset)


async def candles(kernel: Any, *closes: tuple[int, float]) -> None:
    await _candles.store(kernel, "binance", "BTC/USDT", "1m", [_candles.Candle(minute(m), c, c, c, c, 1) for m, c in closes])


async def outbox(kernel: Any) -> list[tuple[str, dict[str, Any]]]:
    async with kernel.database().session(system=True) as session:
        rows = (await session.execute(sa.text("SELECT type, payload FROM botcriptofy_outbox ORDER BY created_at"))).all()
    return [(kind, json.loads(payload) if isinstance(payload, str) else payload) for kind, payload in rows]


async def trader(client: Any, email: str = "ana@example.com") -> tuple[dict[str, str], str, str]:
    headers, body = await signup(client, email)
    account = await client.post("/v1/trading/accounts", headers=headers, json={"exchange": "paper", "label": "practice"})
    assert account.status_code == 201, account.text
    return headers, account.json()["id"], str(body.get("tenant_id") or body.get("user", {}).get("tenant_id"))


def bot_body(account_id: str, **more: Any) -> dict[str, Any]:
    return {
        "name": "scalper",
        "strategy": "scripted",
        "account_id": account_id,
        "symbol": "BTC/USDT",
        "timeframe": "1m",
        "order_amount": "1",
        "max_position": "2",
        **more,
    }


@pytest.fixture
async def time_skipping() -> Any:
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=TEST_SERVER)
    try:
        yield env
    finally:
        await env.shutdown()


async def test_paper_bot_from_sign_up_to_fills_and_pnl(database_url, kernel_harness, time_skipping):
    Scripted.SCRIPT = {101.0: 1, 109.0: -1}
    probe = Probe()
    harness = await kernel_harness(plugins=plugins(probe, time_skipping.client), settings=settings(database_url, engine=True))
    client, kernel = harness.client, harness.kernel
    headers, account_id, _ = await trader(client)

    # Field-named 422s: unknown strategy, parameters against the schema, unknown account, order larger than the position.
    async def refused(field: str, **body: Any) -> None:
        answer = await client.post("/v1/trading/bots", headers=headers, json={**bot_body(account_id), **body})
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert field in [e["field"] for e in answer.json()["errors"]], answer.json()

    await refused("strategy", strategy="nope")
    await refused("parameters", strategy="sma_crossover", parameters={"fast": 30, "slow": 20})
    await refused("parameters.fast", strategy="sma_crossover", parameters={"fast": "x"})
    await refused("account_id", account_id="missing")
    await refused("order_amount", order_amount="3")
    await refused("max_position", max_position="-1")
    await refused("timeframe", timeframe="7x")

    created = await client.post(
        "/v1/trading/bots", headers=headers, json=bot_body(account_id, max_daily_loss="500", stop_loss_percent="50")
    )
    assert created.status_code == 201, created.text
    bot = created.json()
    assert bot["status"] == "created" and bot["source"] == "binance" and bot["risk"]["max_position"] == "2"
    # Free plan: one bot; the refusal names the quota and the plan that lifts it.
    second = await client.post("/v1/trading/bots", headers=headers, json=bot_body(account_id))
    assert second.status_code == 403 and second.json()["quota"] == "bots" and second.json()["upgrade_to"] == "pro"

    await candles(kernel, (-3, 100.0), (-2, 101.0))  # the newest candle says buy
    started = await client.post(f"/v1/trading/bots/{bot['id']}/start", headers={**headers, "Idempotency-Key": "start-1"})
    assert started.status_code == 200 and started.json()["status"] == "running", started.text
    again = await client.post(f"/v1/trading/bots/{bot['id']}/start", headers={**headers, "Idempotency-Key": "start-1"})
    assert again.headers.get("idempotent-replayed") == "true"

    async def fills() -> list[dict[str, Any]]:
        return (await client.get(f"/v1/trading/bots/{bot['id']}/fills", headers=headers)).json()

    await wait_until(lambda: _count(fills, 1), timeout=30)
    await candles(kernel, (-1, 109.0))  # a later candle says sell
    await wait_until(lambda: _count(fills, 2), timeout=30)
    done = await fills()
    assert [(f["side"], f["price"], f["amount"]) for f in reversed(done)] == [("buy", "101", "1"), ("sell", "109", "1")]
    pnl = (await client.get(f"/v1/trading/bots/{bot['id']}/pnl", headers=headers)).json()
    # bought 1 at 101 (fee 0.101), sold 1 at 109 (fee 0.109)
    assert pnl["position"] == "0" and pnl["realised"] == "8" and pnl["fees"] == "0.21" and pnl["net"] == "7.79"
    orders = (await client.get(f"/v1/trading/bots/{bot['id']}/orders", headers=headers)).json()
    assert {o["key"] for o in orders} == {_bots.order_key(bot["id"], minute(-2), "buy"), _bots.order_key(bot["id"], minute(-1), "sell")}
    listed = (await client.get("/v1/trading/orders", headers=headers, params={"account_id": account_id})).json()
    assert len(listed) == 2  # the exchange saw exactly the bot's two orders
    decided = (await client.get(f"/v1/trading/bots/{bot['id']}/decisions", headers=headers)).json()
    assert [d["action"] for d in decided][:2] == ["sell", "buy"]

    paused = await client.post(f"/v1/trading/bots/{bot['id']}/pause", headers=headers)
    assert paused.json()["status"] == "paused"
    stopped = await client.post(f"/v1/trading/bots/{bot['id']}/stop", headers=headers)
    assert stopped.json()["status"] == "stopped" and stopped.json()["stop_reason"] == "user"
    assert await kernel.workflows().describe(f"trading.bot.{bot['id']}.1.0") is not None
    await wait_until(lambda: _closed(kernel, f"trading.bot.{bot['id']}.1.0"), timeout=30)

    # Another tenant sees none of it.
    other, _, _ = await trader(client, "bia@example.com")
    assert (await client.get(f"/v1/trading/bots/{bot['id']}", headers=other)).status_code == 404
    assert (await client.get("/v1/trading/bots", headers=other)).json() == []

    events = await outbox(kernel)
    assert [p["side"] for t, p in events if t == "trading.order_filled"] == ["buy", "sell"]
    assert [p["reason"] for t, p in events if t == "trading.bot_stopped"] == ["user"]
    await wait_until(lambda: len([n for n in probe.notifications if n.category == "trading.order_filled"]) == 2, timeout=10)
    assert all(n.recipient.startswith("tenant:") for n in probe.notifications if n.category == "trading.order_filled")
    # Deleting frees the plan slot.
    assert (await client.delete(f"/v1/trading/bots/{bot['id']}", headers=headers)).status_code == 204
    assert (await client.post("/v1/trading/bots", headers=headers, json=bot_body(account_id))).status_code == 201


async def _count(fetch: Any, expected: int) -> bool:
    return len(await fetch()) >= expected


async def _closed(kernel: Any, workflow_id: str) -> bool:
    found = await kernel.workflows().describe(workflow_id)
    return found is not None and found.status != "running"


async def _running_bot(harness: Any, **body: Any) -> tuple[dict[str, str], str, str, str]:
    """A trader with a bot marked running (ticks are driven by the test, without a workflow engine)."""
    headers, account_id, _ = await trader(harness.client)
    created = await harness.client.post("/v1/trading/bots", headers=headers, json=bot_body(account_id, **body))
    assert created.status_code == 201, created.text
    bot_id = created.json()["id"]
    tenant = await _bots.tenant_of(harness.kernel, bot_id)
    assert tenant is not None
    async with harness.kernel.database().session(tenant_id=tenant) as session:
        await session.execute(sa.update(_bots.bots).where(_bots.bots.c.id == bot_id).values(status="running", run=1))
    return headers, account_id, tenant, bot_id


async def test_racing_signals_never_exceed_max_position(database_url, kernel_harness):
    Scripted.SCRIPT = {101.0: 1, 102.0: 1, 103.0: 1}
    harness = await kernel_harness(plugins=plugins(Probe()), settings=settings(database_url))
    kernel = harness.kernel
    _, _, tenant, bot_id = await _running_bot(harness, order_amount="1", max_position="1.5")
    await candles(kernel, (-4, 100.0), (-3, 101.0), (-2, 102.0), (-1, 103.0))
    # Three buy signals on three candles at once, and the same candle twice: one decision per candle, 1.5 held at most.
    results = await asyncio.gather(
        *(_bots.tick(kernel, tenant, bot_id, upto=minute(m)) for m in (-3, -2, -1, -1)),
    )
    assert sorted(r["action"] or "-" for r in results).count("buy") <= 2
    async with kernel.database().session(tenant_id=tenant) as session:
        book = await _bots.book_of(session, tenant, bot_id)
        decided = (await session.execute(sa.select(_bots.decisions.c.action).where(_bots.decisions.c.bot_id == bot_id))).scalars().all()
    assert book.position == 1.5 and book.pending_buy == 0
    assert sorted(decided) == ["buy", "buy", "refused"]


async def test_risk_limits_at_their_boundaries(database_url, kernel_harness):
    harness = await kernel_harness(plugins=plugins(probe := Probe()), settings=settings(database_url))
    kernel = harness.kernel
    Scripted.SCRIPT = {100.0: 1}
    # max_position: 1 + 1 = 2 is allowed, a third buy is refused.
    _, _, tenant, bot_id = await _running_bot(harness, order_amount="1", max_position="2", stop_loss_percent="10", max_daily_loss="50")
    for m in (-30, -29, -28):
        await candles(kernel, (m, 100.0))
        await _bots.tick(kernel, tenant, bot_id, upto=minute(m))
    async with kernel.database().session(tenant_id=tenant) as session:
        book = await _bots.book_of(session, tenant, bot_id)
    assert book.position == 2 and book.average_entry == 100
    # Stop-loss 10 % below the entry of 100: 90.01 holds, 90 sells everything and stops the bot.
    await candles(kernel, (-27, 90.01))
    assert (await _bots.tick(kernel, tenant, bot_id, upto=minute(-27)))["action"] == "hold"
    await candles(kernel, (-26, 90.0))
    result = await _bots.tick(kernel, tenant, bot_id, upto=minute(-26))
    assert result == {"state": "stopped", "action": "stop_loss", "wait": 0.3}
    row = await _bots.get_row(kernel, tenant, bot_id)
    assert row.status == "stopped" and row.stop_reason == "stop_loss"
    async with kernel.database().session(tenant_id=tenant) as session:
        assert (await _bots.book_of(session, tenant, bot_id)).position == 0
    events = await outbox(kernel)
    assert [(p["reason"]) for t, p in events if t == "trading.bot_stopped"] == ["stop_loss"]
    assert not [t for t, _ in events if t == "trading.daily_loss_hit"]
    await wait_until(lambda: any(n.category == "trading.bot_stopped" for n in probe.notifications), timeout=10)


async def test_max_daily_loss_stops_the_bot_exactly_at_the_limit(database_url, kernel_harness):
    harness = await kernel_harness(plugins=plugins(Probe()), settings=settings(database_url))
    kernel = harness.kernel
    Scripted.SCRIPT = {100.0: 1}
    # fee 0.1 on the buy of 1 at 100: a close of 95.1 makes today's loss 4.9 + 0.1 = 5.0, the limit.
    _, _, tenant, bot_id = await _running_bot(harness, order_amount="1", max_position="1", max_daily_loss="5")
    await candles(kernel, (-10, 100.0))
    assert (await _bots.tick(kernel, tenant, bot_id, upto=minute(-10)))["action"] == "buy"
    await candles(kernel, (-9, 95.11))
    assert (await _bots.tick(kernel, tenant, bot_id, upto=minute(-9)))["action"] == "hold"  # loss 4.99
    await candles(kernel, (-8, 95.1))
    assert (await _bots.tick(kernel, tenant, bot_id, upto=minute(-8)))["action"] == "daily_loss"
    pnl = await _bots.pnl(kernel, tenant, bot_id)
    assert pnl["position"] == "0" and pnl["net"] == "-5.0951"  # sold at 95.1 with its fee 0.0951
    events = await outbox(kernel)
    assert [(p["loss"], p["limit"]) for t, p in events if t == "trading.daily_loss_hit"] == [("5", "5")]
    assert [p["reason"] for t, p in events if t == "trading.bot_stopped"] == ["max_daily_loss"]


async def test_saved_strategies_count_against_the_plan_with_a_warning_at_80_percent(database_url, kernel_harness):
    harness = await kernel_harness(plugins=plugins(Probe()), settings=settings(database_url))
    client = harness.client
    headers, _, _ = await trader(client)
    body = {"name": "fast sma", "strategy": "sma_crossover", "parameters": {"fast": 5, "slow": 10}}
    bad = await client.post("/v1/trading/strategies/saved", headers=headers, json={**body, "parameters": {"fast": 10, "slow": 5}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"].startswith("parameters")
    for _ in range(3):  # Free: 3 strategies
        assert (await client.post("/v1/trading/strategies/saved", headers=headers, json=body)).status_code == 201
    refused = await client.post("/v1/trading/strategies/saved", headers=headers, json=body)
    assert refused.status_code == 403 and refused.json()["quota"] == "strategies" and refused.json()["upgrade_to"] == "pro"
    events = await outbox(harness.kernel)
    assert [p["used"] for t, p in events if t == "billing.quota_warning" and p["quota"] == "strategies"] == [3]
    saved = (await client.get("/v1/trading/strategies/saved", headers=headers)).json()
    assert len(saved) == 3
    assert (await client.delete(f"/v1/trading/strategies/saved/{saved[0]['id']}", headers=headers)).status_code == 204
    assert (await client.post("/v1/trading/strategies/saved", headers=headers, json=body)).status_code == 201


WORKER = Path(__file__).with_name("_bot_worker.py")


class Worker:
    """A ``_bot_worker.py`` process in its own session (so SIGKILL takes everything it started)."""

    def __init__(self, tmp_path: Path, settings_dir: Path, log: Path, phase: str) -> None:
        self.output = open(tmp_path / f"worker-{phase}.log", "ab")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), str(settings_dir), str(log), phase],
            cwd=tmp_path,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.output.close()


def _records(log: Path, kind: str) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [item for line in log.read_text().splitlines() if (item := json.loads(line))["kind"] == kind]


@pytest.mark.slow
async def test_a_worker_process_killed_mid_tick_resumes_the_bot_once_without_a_second_order(database_url, tmp_path):
    """A worker process places the bot's order on the exchange and is SIGKILLed before it records the fill; a new
    process takes the tick over from the engine (same key): one exchange order, one fill, both databases."""
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=TEMPORAL, ui=False)
    settings_dir, log = tmp_path / "settings", tmp_path / "placed.log"
    settings_dir.mkdir()
    found = settings(database_url, engine=True, bot_tick_timeout=3)
    found["workflows"] = {**FAST, "mode": "external", "address": env.client.service_client.config.target_host}
    (settings_dir / "settings.toml").write_text(render_settings(found, state_dir=tmp_path / "state"))
    workers: list[Worker] = []
    try:
        workers.append(first := Worker(tmp_path, settings_dir, log, "first"))
        await wait_until(lambda: bool(_records(log, "placed")) or not first.alive(), timeout=90)
        assert first.alive(), (tmp_path / "worker-first.log").read_text(errors="replace")
        first.kill()  # the exchange has the order; the bot's row still says pending
        (bot,) = _records(log, "bot")
        engine = create_async_engine(database_url)
        try:

            async def rows(table: sa.Table, **where: str) -> list[Any]:
                async with engine.connect() as connection:
                    query = sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
                    return list((await connection.execute(query)).all())

            assert [o.status for o in await rows(bot_orders, bot_id=bot["bot_id"])] == ["pending"]
            assert len(await rows(exchange_orders, account_id=bot["account_id"])) == 1

            workers.append(second := Worker(tmp_path, settings_dir, log, "second"))

            async def settled() -> bool:
                assert second.alive(), (tmp_path / "worker-second.log").read_text(errors="replace")
                return [o.status for o in await rows(bot_orders, bot_id=bot["bot_id"])] == ["filled"]

            await wait_until(settled, timeout=90)
            placed = _records(log, "placed")
            assert [p["phase"] for p in placed] == ["first", "second"]
            assert placed[0]["order_id"] == placed[1]["order_id"] and placed[0]["key"] == placed[1]["key"]
            assert placed[0]["pid"] != placed[1]["pid"]
            on_exchange = await rows(exchange_orders, account_id=bot["account_id"])
            assert [(o.id, o.status) for o in on_exchange] == [(placed[0]["order_id"], "filled")]
            fills = await rows(bot_fills, bot_id=bot["bot_id"])
            assert [(f.side, f.amount, f.price) for f in fills] == [("buy", "1", "101")]
            assert [d.action for d in await rows(_bots.decisions, bot_id=bot["bot_id"])] == ["buy"]
        finally:
            await engine.dispose()
    finally:
        for worker in workers:
            worker.stop()
        await env.shutdown()
