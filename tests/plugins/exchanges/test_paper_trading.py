"""Paper trading end to end on SQLite and PostgreSQL: sign-up, a paper account, orders, fills, balances and P&L, plan limits."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from botcriptofy_exchanges import _candles
from support import trader_signup as signup

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def outbox(kernel) -> list[tuple[str, dict]]:
    async with kernel.database().session(system=True) as session:
        rows = (await session.execute(sa.text("SELECT type, payload FROM botcriptofy_outbox ORDER BY created_at"))).all()
    return [(kind, json.loads(payload) if isinstance(payload, str) else payload) for kind, payload in rows]


def candle(hours: int, close: float, low: float | None = None, high: float | None = None) -> _candles.Candle:
    return _candles.Candle(T0 + timedelta(hours=hours), close, high or close, low or close, close, 1.0)


async def test_paper_trading_from_sign_up_to_profit(make_trading):
    harness = await make_trading(paper_fee_rate=0.001, paper_slippage_bps=10)
    client, kernel = harness.client, harness.kernel
    # Recorded prices: what ops load with `botcriptofy marketdata import` (a current-time candle so resting orders see later ones).
    now = datetime.now(UTC).replace(microsecond=0)
    await _candles.store(kernel, "binance", "BTC/USDT", "1h", [_candles.Candle(now - timedelta(hours=1), 100, 100, 100, 100, 1)])
    headers, _ = await signup(client, "ana@example.com")

    created = await client.post("/v1/trading/accounts", headers=headers, json={"exchange": "paper", "label": "practice"})
    assert created.status_code == 201, created.text
    account = created.json()
    assert account["paper"] and account["price_source"] == "binance" and account["api_key_hint"] is None

    # Free plan: one exchange account; the refusal names the quota and the plan that lifts it.
    second = await client.post("/v1/trading/accounts", headers=headers, json={"exchange": "paper"})
    assert second.status_code == 403 and second.json()["quota"] == "exchanges" and second.json()["upgrade_to"] == "pro"

    order = {"account_id": account["id"], "symbol": "BTC/USDT", "side": "buy", "type": "market", "amount": "10"}
    missing = await client.post("/v1/trading/orders", headers=headers, json=order)
    assert missing.status_code == 428 and missing.json()["errors"][0]["field"] == "Idempotency-Key"

    bought = await client.post("/v1/trading/orders", headers={**headers, "Idempotency-Key": "buy-1"}, json=order)
    assert bought.status_code == 201, bought.text
    filled = bought.json()
    assert filled["status"] == "filled" and filled["average"] == "100.1"  # 10 bps of slippage
    assert filled["fee"] == "1.001" and len(filled["fills"]) == 1
    again = await client.post("/v1/trading/orders", headers={**headers, "Idempotency-Key": "buy-1"}, json=order)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true" and again.json()["id"] == filled["id"]
    reused = await client.post("/v1/trading/orders", headers={**headers, "Idempotency-Key": "buy-1"}, json={**order, "amount": "2"})
    assert reused.status_code == 422

    poor = await client.post("/v1/trading/orders", headers={**headers, "Idempotency-Key": "too-much"}, json={**order, "amount": "1000"})
    assert poor.status_code == 422 and poor.json()["errors"][0]["field"] == "amount"
    no_price = await client.post(
        "/v1/trading/orders", headers={**headers, "Idempotency-Key": "limit-no-price"}, json={**order, "type": "limit"}
    )
    assert no_price.status_code == 422 and no_price.json()["errors"][0]["field"] == "price"

    sell = {"account_id": account["id"], "symbol": "BTC/USDT", "side": "sell", "type": "limit", "amount": "10", "price": "110"}
    resting = await client.post("/v1/trading/orders", headers={**headers, "Idempotency-Key": "sell-1"}, json=sell)
    assert resting.status_code == 201 and resting.json()["status"] == "open"
    balances = (await client.get("/v1/trading/paper/balances", headers=headers, params={"account_id": account["id"]})).json()
    btc = next(b for b in balances["balances"] if b["asset"] == "BTC")
    assert btc["free"] == "0" and btc["locked"] == "10"

    # A later candle trades up through the limit: the resting order fills at its price.
    await _candles.store(kernel, "binance", "BTC/USDT", "1h", [_candles.Candle(now + timedelta(minutes=1), 105, 111, 104, 108, 1)])
    orders = (await client.get("/v1/trading/orders", headers=headers, params={"account_id": account["id"]})).json()
    assert [o["status"] for o in orders if o["id"] == resting.json()["id"]] == ["filled"]
    balances = (await client.get("/v1/trading/paper/balances", headers=headers, params={"account_id": account["id"]})).json()
    usdt = next(b for b in balances["balances"] if b["asset"] == "USDT")
    # 10 000 - 1001 - 1.001 (buy) + 1100 - 1.1 (sell) = 10 096.899
    assert usdt["free"] == "10096.899" and balances["pnl"] == "96.899" and balances["complete"]

    # Free plan: 10 orders per UTC day (the two placed count; refused ones do not).
    small = {**order, "amount": "0.01"}
    for number in range(8):
        placed = await client.post("/v1/trading/orders", headers={**headers, "Idempotency-Key": f"small-{number}"}, json=small)
        assert placed.status_code == 201, placed.text
    refused = await client.post("/v1/trading/orders", headers={**headers, "Idempotency-Key": "small-over"}, json=small)
    assert refused.status_code == 403 and refused.json()["quota"] == "orders_per_day"
    # Billing's 80 % warning and 100 % refusal were published once each; every fill published an event.
    events = await outbox(kernel)
    assert [p["used"] for t, p in events if t == "billing.quota_warning" and p["quota"] == "orders_per_day"] == [8]
    assert [p["used"] for t, p in events if t == "billing.quota_exhausted" and p["quota"] == "orders_per_day"] == [10]
    assert sum(1 for t, _ in events if t == "exchanges.order_filled") == 10

    # Another tenant sees none of it.
    other, _ = await signup(client, "bia@example.com")
    assert (await client.get("/v1/trading/accounts", headers=other)).json() == []
    assert (await client.get("/v1/trading/paper/balances", headers=other, params={"account_id": account["id"]})).status_code == 404

    # Unlinking frees the plan slot.
    assert (await client.delete(f"/v1/trading/accounts/{account['id']}", headers=headers)).status_code == 204
    relinked = await client.post("/v1/trading/accounts", headers=headers, json={"exchange": "paper"})
    assert relinked.status_code == 201


async def test_candles_gaps_and_csv_validation(make_trading):
    harness = await make_trading()
    kernel = harness.kernel
    headers, _ = await signup(harness.client, "cai@example.com")
    rows = _candles.parse_csv(
        "time,open,high,low,close,volume\n2026-01-01T00:00:00Z,1,2,0.5,1.5,10\n2026-01-01T01:00:00Z,1.5,2,1,1.8,3\n"
        "2026-01-01T04:00:00Z,1.8,2,1,1.9,1\n"
    )
    assert await _candles.store(kernel, "csv", "ABC/USD", "1h", rows) == 3
    got = (
        await harness.client.get("/v1/trading/candles", headers=headers, params={"exchange": "csv", "symbol": "ABC/USD", "timeframe": "1h"})
    ).json()
    assert [c["close"] for c in got["candles"]] == [1.5, 1.8, 1.9]
    assert got["gaps"] == [{"start": "2026-01-01T02:00:00Z", "end": "2026-01-01T03:00:00Z", "missing": 2}]
    bad = await harness.client.get(
        "/v1/trading/candles", headers=headers, params={"exchange": "csv", "symbol": "ABC/USD", "timeframe": "7x"}
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "timeframe"
    # Importing needs the market data permission (configuration department), which a trader lacks.
    refused = await harness.client.post(
        "/v1/trading/candles/import",
        headers=headers,
        json={"exchange": "csv", "symbol": "ABC/USD", "timeframe": "1h", "csv": "time,open\n"},
    )
    assert refused.status_code == 403
    # Real history from the backtesting package: monthly BTC/USD 2012-2024 has no gaps.
    symbol, timeframe, sample = _candles.sample_candles("BTCUSD")
    assert (symbol, timeframe) == ("BTC/USD", "1M") and len(sample) == 156
    assert _candles.find_gaps([c.time for c in sample], timeframe) == []
    assert len(_candles.find_gaps([c.time for c in sample[:10] + sample[12:]], timeframe)) == 1


async def test_concurrent_orders_never_overspend_and_one_key_places_one_order(make_trading):
    harness = await make_trading(paper_fee_rate=0.001, paper_slippage_bps=0)
    client, kernel = harness.client, harness.kernel
    now = datetime.now(UTC)
    await _candles.store(kernel, "binance", "ETH/USDT", "1h", [_candles.Candle(now - timedelta(hours=1), 100, 100, 100, 100, 1)])
    headers, _ = await signup(client, "fay@example.com")
    account = (await client.post("/v1/trading/accounts", headers=headers, json={"exchange": "paper"})).json()
    order = {"account_id": account["id"], "symbol": "ETH/USDT", "side": "buy", "type": "market", "amount": "40"}

    # Three orders of 4 004 USDT each against 10 000: exactly two can be paid for.
    answers = await asyncio.gather(
        *(client.post("/v1/trading/orders", headers={**headers, "Idempotency-Key": f"race-{n}"}, json=order) for n in range(3))
    )
    assert sorted(a.status_code for a in answers) == [201, 201, 422]
    balances = (await client.get("/v1/trading/paper/balances", headers=headers, params={"account_id": account["id"]})).json()
    assert {b["asset"]: b["free"] for b in balances["balances"]} == {"ETH": "80", "USDT": "1992"}

    # The same key sent twice at once: one order, whatever each request was answered.
    small = {**order, "amount": "1"}
    twice = await asyncio.gather(
        *(client.post("/v1/trading/orders", headers={**headers, "Idempotency-Key": "same"}, json=small) for _ in range(2))
    )
    assert {a.status_code for a in twice} <= {201, 409}
    listed = (await client.get("/v1/trading/orders", headers=headers, params={"account_id": account["id"]})).json()
    assert sum(1 for o in listed if o["client_key"] == "same") == 1
