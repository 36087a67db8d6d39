"""The ccxt adapter against a local HTTP server replaying Binance's REST API; secrets never leave the secret box.

The server answers with responses recorded from Binance by ccxt's own static tests (see
``binance_replay.json``: klines and a spot order), and, for the two endpoints ccxt did not record
(exchangeInfo, apiRestrictions), with bodies in the shapes of Binance's API documentation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web

import botcriptofy_auth
import botcriptofy_exchanges
import botcriptofy_storage
from botcriptofy import Actor, DataSubject, hookimpl
from botcriptofy_exchanges import _candles
from botcriptofy_exchanges._state import state_of
from support import trader_signup as signup

REPLAY = json.loads((Path(__file__).parent / "binance_replay.json").read_text())
KEY = "tradeonlyKEYd41d8cd98f00b204e9800998ecf8427e9f3a"
SECRET = "s3cretVALUEnever-shown-e3b0c44298fc1c149afbf4c8996fb92427ae41e4"
WITHDRAW_KEY = "withdrawKEYaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa7777"


class BinanceReplay:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "body": body,
                "key": request.headers.get("X-MBX-APIKEY"),
                "at": time.monotonic(),
            }
        )
        route = f"{request.method} {request.path}"
        if route in REPLAY["recorded"]:
            return web.json_response(REPLAY["recorded"][route]["response"])
        if route == "GET /sapi/v1/account/apiRestrictions":
            answer = dict(REPLAY["documented"][route])
            answer["enableWithdrawals"] = request.headers.get("X-MBX-APIKEY") == WITHDRAW_KEY
            return web.json_response(answer)
        if route in REPLAY["documented"]:
            return web.json_response(REPLAY["documented"][route])
        return web.json_response({"code": -1100, "msg": f"not replayed: {route}"}, status=400)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def calls(self, method: str, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]


@pytest.fixture
async def binance():
    server = BinanceReplay()
    await server.start()
    yield server
    await server.stop()


async def test_market_data_through_ccxt_with_the_exchange_rate_limit(binance, make_trading):
    harness = await make_trading(api_urls={"binance": binance.url}, rate_limit_ms={"binance": 250})
    client = await state_of(harness.kernel).clients.public("binance")
    rows = await client.fetch_ohlcv("BTC/USDT", "1h", 1706628191000, 3)
    assert rows == REPLAY["recorded"]["GET /api/v3/klines"]["parsed"]
    assert binance.calls("GET", "/api/v3/klines")[0]["query"]["symbol"] == "BTCUSDT"
    candles = _candles.ccxt_rows(rows)
    assert await _candles.store(harness.kernel, "binance", "BTC/USDT", "1h", candles) == 3
    assert _candles.find_gaps([c.time for c in candles], "1h") == []
    headers, _ = await signup(harness.client, "gil@example.com")
    markets = (await harness.client.get("/v1/trading/markets", headers=headers, params={"exchange": "binance"})).json()
    assert markets["markets"] == ["BTC/USDT", "SOL/USDT"]
    assert [(s["symbol"], s["timeframe"], s["count"]) for s in markets["stored"]] == [("BTC/USDT", "1h", 3)]

    # One client per exchange: concurrent callers are paced by ccxt's throttle at the exchange's rate, each request
    # weighted as the exchange weighs it (ccxt's Binance description gives klines 0.4 of a request: 250 ms x 0.4).
    await asyncio.gather(*(client.fetch_ohlcv("BTC/USDT", "1h", 1706628191000, 3) for _ in range(4)))
    stamps = [r["at"] for r in binance.calls("GET", "/api/v3/klines")[1:]]
    # Four requests paced 100 ms apart span at least 300 ms (arrival jitter only moves the ends a little).
    assert stamps[-1] - stamps[0] >= 0.25


async def test_live_account_keys_are_sealed_checked_and_never_shown(binance, make_trading, caplog):
    caplog.set_level(logging.DEBUG)
    harness = await make_trading(api_urls={"binance": binance.url}, rate_limit_ms={"binance": 10})
    client, kernel = harness.client, harness.kernel
    headers, body = await signup(client, "eva@example.com")
    bodies: list[str] = []

    refused = await client.post(
        "/v1/trading/accounts", headers=headers, json={"exchange": "binance", "api_key": WITHDRAW_KEY, "api_secret": SECRET}
    )
    bodies.append(refused.text)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "api_key"
    assert "withdraw" in refused.json()["detail"].lower()

    linked = await client.post(
        "/v1/trading/accounts", headers=headers, json={"exchange": "binance", "label": "main", "api_key": KEY, "api_secret": SECRET}
    )
    bodies.append(linked.text)
    assert linked.status_code == 201, linked.text
    account = linked.json()
    assert account["api_key_hint"] == "****9f3a" and account["permissions"] == {"read": True, "trade": True, "withdraw": False}

    order = {"account_id": account["id"], "symbol": "SOL/USDT", "side": "buy", "type": "limit", "amount": "0.05", "price": "241"}
    placed = await client.post("/v1/trading/orders", headers={**headers, "Idempotency-Key": "live-1"}, json=order)
    bodies.append(placed.text)
    assert placed.status_code == 201, [(r["method"], r["path"]) for r in binance.requests]
    assert placed.json()["exchange_order_id"] == "9780331417" and placed.json()["status"] == "open"
    retry = await client.post("/v1/trading/orders", headers={**headers, "Idempotency-Key": "live-1"}, json=order)
    assert retry.json()["id"] == placed.json()["id"]
    sent = binance.calls("POST", "/api/v3/order")
    assert len(sent) == 1  # never placed twice for one key
    sent_fields = {**sent[0]["query"], **dict(p.split("=", 1) for p in sent[0]["body"].split("&") if "=" in p)}
    assert sent_fields["newClientOrderId"].startswith("bcf") and sent_fields["symbol"] == "SOLUSDT"
    assert all(r["key"] == KEY for r in binance.requests if r["path"].startswith(("/sapi", "/api/v3/order")) and r["key"] != WITHDRAW_KEY)

    bodies.append((await client.get("/v1/trading/accounts", headers=headers)).text)
    bodies.append((await client.get("/v1/trading/orders", headers=headers)).text)
    exported = await kernel.broadcast(
        "export_subject_data", kernel=kernel, subject=DataSubject(user_id=body["user"]["id"], tenant_id=body["tenant"]["id"])
    )
    assert exported["exchanges"]["accounts"][0]["api_key_hint"] == "****9f3a"
    bodies.append(json.dumps(exported, default=str))
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for text in [*bodies, logs]:
        assert KEY not in text and SECRET not in text and KEY[:-4] not in text

    async with kernel.database().session(system=True) as session:
        stored = (await session.execute(sa.text("SELECT api_key, api_secret FROM exchanges_accounts"))).one()
    assert KEY not in stored.api_key and SECRET not in stored.api_secret
    assert kernel.secret_box().open(stored.api_secret, context=f"exchanges.exchanges_accounts.api_secret:{account['id']}") == SECRET

    # Erasure (LGPD) unlinks every account: sealed keys, orders and the plan slot go.
    subject = DataSubject(user_id=body["user"]["id"], tenant_id=body["tenant"]["id"])
    erased = await kernel.broadcast("erase_subject_data", kernel=kernel, subject=subject)
    assert erased["exchanges"] == {"erased": {"exchange_accounts": 1}}
    async with kernel.database().session(system=True) as session:
        assert (await session.execute(sa.text("SELECT count(*) FROM exchanges_accounts"))).scalar_one() == 0
        assert (await session.execute(sa.text("SELECT count(*) FROM exchanges_orders"))).scalar_one() == 0


class Operator:
    """A test identity plugin: every request is a configuration member holding ``marketdata:import``."""

    @hookimpl
    def actor_from_request(self, kernel, request):
        return Actor(id="ops-1", kind="user", permissions=frozenset({"marketdata:import"}))


async def test_operators_import_csv_and_fetch_candles_through_the_api(binance, kernel_harness, tmp_path):
    plugins = {"storage": botcriptofy_storage, "exchanges": botcriptofy_exchanges, "ops": Operator()}
    settings = {"storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}"}, "exchanges": {"api_urls": {"binance": binance.url}}}
    harness = await kernel_harness(plugins=plugins, settings=settings)
    csv = "date,open,high,low,close,volume\n1706630400000,1,2,0.5,1.5,10\n1706634000000,1.5,2,1,1.8,3\n1706644800000,1.8,2,1,1.9,1\n"
    imported = await harness.client.post(
        "/v1/trading/candles/import", json={"exchange": "mine", "symbol": "ABC/USD", "timeframe": "1h", "csv": csv}
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["written"] == 3 and imported.json()["gaps"][0]["missing"] == 2
    bad = await harness.client.post(
        "/v1/trading/candles/import",
        json={"exchange": "mine", "symbol": "ABC/USD", "timeframe": "1h", "csv": "time,open,high,low,close\nyesterday,1,2,3,4\n"},
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "csv" and "Row 2" in bad.json()["detail"]
    fetched = await harness.client.post(
        "/v1/trading/candles/fetch",
        json={"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h", "since": "2024-01-30T15:23:11Z", "limit": 3},
    )
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == {"written": 3, "gaps": []}
    assert binance.calls("GET", "/api/v3/klines")[-1]["query"]["startTime"] == "1706628191000"
    stored = (
        await harness.client.get("/v1/trading/candles", params={"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"})
    ).json()
    assert [c["close"] for c in stored["candles"]] == [43488.71, 43374.8, 43361.11]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_keys_are_resealed_after_a_key_rotation(binance, database_url, kernel_harness):
    from botcriptofy_auth._fields import new_key_entry
    from support import FAST_HASH

    first, second = new_key_entry("k1"), new_key_entry("k2")
    plugins = {"storage": botcriptofy_storage, "auth": botcriptofy_auth, "exchanges": botcriptofy_exchanges}

    def settings(keys: list[str]) -> dict[str, Any]:
        return {
            "storage": {"url": database_url},
            "auth": {**FAST_HASH, "field_encryption_keys": keys},
            "exchanges": {"api_urls": {"binance": binance.url}},
        }

    harness = await kernel_harness(plugins=plugins, settings=settings([first]))
    headers, _ = await signup(harness.client, "hal@example.com")
    linked = await harness.client.post(
        "/v1/trading/accounts", headers=headers, json={"exchange": "binance", "api_key": KEY, "api_secret": SECRET}
    )
    assert linked.status_code == 201, linked.text

    async def sealed() -> Any:
        async with harness.kernel.database().session(system=True) as session:
            return (await session.execute(sa.text("SELECT id, api_key, api_secret FROM exchanges_accounts"))).one()

    assert (await sealed()).api_key.startswith("v1.k1.")
    assert (await harness.apply(settings([second, first]))).applied
    outcome = await harness.kernel.reencrypt_secrets()
    assert outcome["exchanges"] == 2
    row = await sealed()
    assert row.api_key.startswith("v1.k2.") and row.api_secret.startswith("v1.k2.")
    assert (await harness.apply(settings([second]))).applied  # the old key removed: the keys still open
    box = harness.kernel.secret_box()
    assert box.open(row.api_secret, context=f"exchanges.exchanges_accounts.api_secret:{row.id}") == SECRET
