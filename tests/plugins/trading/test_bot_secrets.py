"""A bot on a live (Binance, replayed) exchange account: its API key and secret never appear in the bot's responses,
in any log record of its run (every logger at DEBUG), in outbox event payloads or in the trader's privacy export,
on SQLite and PostgreSQL. The replay server is the exchanges tests' (recordings described in ``binance_replay.json``)."""

from __future__ import annotations

import importlib.util
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import sqlalchemy as sa

from botcriptofy import DataSubject, hookimpl
from botcriptofy_exchanges import _candles
from botcriptofy_trading import Parameters, Strategy, _bots
from support import trader_signup as signup

_spec = importlib.util.spec_from_file_location("exchanges_ccxt_replay", Path(__file__).parents[1] / "exchanges" / "test_ccxt_replay.py")
assert _spec is not None and _spec.loader is not None
replay = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(replay)
KEY, SECRET = replay.KEY, replay.SECRET


class BuyThenSell(Strategy):
    """+1 on a close of 241, -1 on 250."""

    name = "buy_then_sell"
    description = "Test strategy: buys on 241, sells on 250."
    Parameters = Parameters
    SCRIPT: ClassVar[dict[float, int]] = {241.0: 1, 250.0: -1}

    @staticmethod
    def signals(close: np.ndarray, params: Any) -> np.ndarray:
        return np.array([BuyThenSell.SCRIPT.get(float(c), 0) for c in close], dtype=np.int8)


class Strategies:
    @hookimpl(optionalhook=True)
    def register_strategies(self, kernel: Any) -> list[type[Any]]:
        return [BuyThenSell]


@pytest.fixture
async def binance() -> Any:
    server = replay.BinanceReplay()
    await server.start()
    yield server
    await server.stop()


def leaks(text: str) -> list[str]:
    """The pieces of the credentials found in ``text`` (the key without its shown last 4 characters counts)."""
    return [name for name, piece in (("key", KEY), ("key prefix", KEY[:-4]), ("secret", SECRET), ("secret", SECRET[4:-4])) if piece in text]


async def test_a_live_accounts_keys_never_appear_in_bot_responses_logs_events_or_the_export(
    binance: Any, database_url: str, kernel_harness: Any, caplog: Any
) -> None:
    import botcriptofy_auth
    import botcriptofy_exchanges
    import botcriptofy_storage
    import botcriptofy_trading
    from botcriptofy_billing import BillingPlugin
    from support import FAST_HASH

    caplog.set_level(logging.DEBUG)  # the root: every logger, every level
    plugins = {
        "storage": botcriptofy_storage,
        "auth": botcriptofy_auth,
        "billing": BillingPlugin(),
        "exchanges": botcriptofy_exchanges,
        "trading": botcriptofy_trading,
        "strategies": Strategies(),
    }
    settings = {
        "storage": {"url": database_url, "relay_poll_interval": 0.1},
        "auth": FAST_HASH,
        "exchanges": {"api_urls": {"binance": binance.url}, "rate_limit_ms": {"binance": 10}},
        "trading": {"bot_poll_seconds": 0.3},
    }
    harness = await kernel_harness(plugins=plugins, settings=settings)
    client, kernel = harness.client, harness.kernel
    headers, body = await signup(client, "eva@example.com")
    tenant = body["tenant"]["id"]
    bodies: list[str] = []

    linked = await client.post(
        "/v1/trading/accounts", headers=headers, json={"exchange": "binance", "label": "main", "api_key": KEY, "api_secret": SECRET}
    )
    assert linked.status_code == 201, linked.text
    account_id = linked.json()["id"]
    bot_body = {
        "name": "live",
        "strategy": "buy_then_sell",
        "account_id": account_id,
        "symbol": "SOL/USDT",
        "timeframe": "1m",
        "order_amount": "0.05",
        "max_position": "0.1",
        "max_daily_loss": "100",
    }
    created = await client.post("/v1/trading/bots", headers=headers, json=bot_body)
    bodies.append(created.text)
    assert created.status_code == 201, created.text
    bot_id = created.json()["id"]
    async with kernel.database().session(tenant_id=tenant) as session:  # running without an engine: the test drives the ticks
        await session.execute(sa.update(_bots.bots).where(_bots.bots.c.id == bot_id).values(status="running", run=1))

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    closes = [(now - timedelta(minutes=3), 240.0), (now - timedelta(minutes=2), 241.0)]
    await _candles.store(kernel, "binance", "SOL/USDT", "1m", [_candles.Candle(t, c, c, c, c, 1) for t, c in closes])
    bought = await _bots.tick(kernel, tenant, bot_id, upto=now - timedelta(minutes=2))
    assert bought["action"] == "buy", bought
    sent = binance.calls("POST", "/api/v3/order")
    assert len(sent) == 1 and sent[0]["key"] == KEY  # the order really went to the exchange, signed with the key

    for path in ("", "/orders", "/fills", "/decisions", "/pnl"):
        answer = await client.get(f"/v1/trading/bots/{bot_id}{path}", headers=headers)
        assert answer.status_code == 200, answer.text
        bodies.append(answer.text)
    orders = json.loads(bodies[-4])
    assert [(o["side"], o["status"]) for o in orders] == [("buy", "open")]
    on_exchange = (await client.get("/v1/trading/orders", headers=headers, params={"account_id": account_id})).json()
    bodies.append(json.dumps(on_exchange))
    assert [(o["id"], o["exchange_order_id"]) for o in on_exchange] == [(orders[0]["exchange_order_id"], "9780331417")]
    bodies.append((await client.get("/v1/trading/bots", headers=headers)).text)
    stopped = await client.post(f"/v1/trading/bots/{bot_id}/stop", headers=headers)
    bodies.append(stopped.text)
    assert stopped.json()["status"] == "stopped"

    async with kernel.database().session(system=True) as session:
        events = [
            (kind, payload) for kind, payload in (await session.execute(sa.text("SELECT type, payload FROM botcriptofy_outbox"))).all()
        ]
    assert "trading.bot_stopped" in [kind for kind, _ in events]
    bodies.extend(payload if isinstance(payload, str) else json.dumps(payload) for _, payload in events)

    subject = DataSubject(user_id=body["user"]["id"], tenant_id=tenant)
    exported = await kernel.broadcast("export_subject_data", kernel=kernel, subject=subject)
    assert [b["id"] for b in exported["trading"]["bots"]] == [bot_id]
    assert [o["exchange_order_id"] for o in exported["trading"]["orders"]] == [orders[0]["exchange_order_id"]]
    assert exported["exchanges"]["accounts"][0]["api_key_hint"] == "****9f3a"
    bodies.append(json.dumps(exported, default=str))

    records = [f"{r.name} {r.levelname} {r.getMessage()} {r.__dict__} {r.exc_text or ''}" for r in caplog.records]
    assert any("bot decided" in line for line in records)  # the run's own records are among those scanned
    for text in [*bodies, *records]:
        assert leaks(text) == [], text

    # Erasure (LGPD) deletes the trader's bots with their decisions, orders and fills.
    erased = await kernel.broadcast("erase_subject_data", kernel=kernel, subject=subject)
    assert erased["trading"] == {"erased": {"bots": 1, "saved_strategies": 0}}
    async with kernel.database().session(system=True) as session:
        for table in (_bots.bots, _bots.decisions, _bots.bot_orders, _bots.bot_fills):
            assert (await session.execute(sa.select(sa.func.count()).select_from(table))).scalar_one() == 0, table.name
