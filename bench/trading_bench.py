"""Trading: backtest throughput against backtesting.py on the same data, and the paper order path's latency.

1. Backtests: the built-in SMA crossover and RSI mean reversion over real EUR/USD hourly candles
   (backtesting.test.EURUSD, repeated end to end to 50 000 bars), our vectorised engine against
   backtesting.py's ``Backtest.run`` with the same strategy, in the same run: candles per second
   and the ratio; the results agree (return, drawdown, trades).
2. Paper orders: ``POST /v1/trading/orders`` (market order, a new Idempotency-Key each) through the
   whole app in process (storage on SQLite, auth, exchanges) until the fill is stored and answered:
   p50/p95 against an authenticated ``GET /v1/trading/accounts`` measured in the same run.

3. Bots per worker: N bots (SMA crossover, 1m candles, one paper account) ticked through the real tick
   path (``_bots.tick``: candles, signal, locked decision, order through the exchanges plugin, fill) once
   per simulated minute, all at once as one worker's activities would be; the largest N whose minute
   completes within 1 s of lag, against one bot's tick in the same run. Load average printed.
Run: ``.venv/bin/python bench/trading_bench.py`` (about a minute on 2 cores).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from backtesting import Backtest
from backtesting import Strategy as ReferenceStrategy
from backtesting.test import EURUSD

import botcriptofy_auth
import botcriptofy_exchanges
import botcriptofy_storage
from botcriptofy import Runtime
from botcriptofy.testing import KernelHarness, render_settings
from botcriptofy_exchanges import _candles
from botcriptofy_trading import RsiReversion, SmaCross, rsi, sma
from botcriptofy_trading._engine import Series, run

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, percentile

BARS = 50_000
ORDERS = 300


class ReferenceSma(ReferenceStrategy):
    def init(self) -> None:
        self.fast = self.I(sma, self.data.Close, 10)
        self.slow = self.I(sma, self.data.Close, 20)

    def next(self) -> None:
        if not self.position and self.fast[-2] < self.slow[-2] and self.fast[-1] > self.slow[-1]:
            self.buy()
        elif self.position and self.fast[-2] > self.slow[-2] and self.fast[-1] < self.slow[-1]:
            self.position.close()


class ReferenceRsi(ReferenceStrategy):
    def init(self) -> None:
        self.value = self.I(rsi, self.data.Close, 14)

    def next(self) -> None:
        if not self.position and self.value[-1] < 30:
            self.buy()
        elif self.position and self.value[-1] > 70:
            self.position.close()


def long_series() -> pd.DataFrame:
    """EUR/USD hourly repeated to BARS rows, each copy scaled to start where the previous ended (no artificial jump)."""
    parts, scale = [], 1.0
    while sum(len(p) for p in parts) < BARS:
        part = EURUSD[["Open", "High", "Low", "Close", "Volume"]].copy()
        part[["Open", "High", "Low", "Close"]] *= scale
        scale = part["Close"].iloc[-1] / EURUSD["Open"].iloc[0]
        parts.append(part)
    frame = pd.concat(parts).iloc[:BARS]
    frame.index = pd.date_range("2010-01-01", periods=BARS, freq="h")
    return frame


def bench_backtests() -> None:
    frame = long_series()
    rows = [{"time": t.to_pydatetime(), "open": o, "high": h, "low": lo, "close": c}
            for t, o, h, lo, c in zip(frame.index, frame.Open, frame.High, frame.Low, frame.Close, strict=True)]
    series = Series.from_rows(rows)
    print(f"backtests over {BARS} EUR/USD hourly candles (cash 10 000, fee 0.2 %, whole units)")
    for ours, reference in ((SmaCross, ReferenceSma), (RsiReversion, ReferenceRsi)):
        params = ours.Parameters()
        repeats = 5
        started = time.perf_counter()
        for _ in range(repeats):
            result = run(series, ours.signals(series.close, params), cash=10_000, fee_rate=0.002, whole_units=True)
        ours_seconds = (time.perf_counter() - started) / repeats
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            started = time.perf_counter()
            stats = Backtest(frame, reference, cash=10_000, commission=0.002).run()
            reference_seconds = time.perf_counter() - started
        agree = abs(result["return_percent"] - stats["Return [%]"]) < 1e-6 and result["trade_count"] == stats["# Trades"]
        print(f"  {ours.name:20s} ours {BARS / ours_seconds:12,.0f} candles/s   backtesting.py {BARS / reference_seconds:10,.0f} candles/s"
              f"   ratio {reference_seconds / ours_seconds:6.1f}x   results agree: {agree}")


async def bench_orders() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "settings"
        directory.mkdir()
        settings = {"storage": {"url": f"sqlite+aiosqlite:///{Path(scratch) / 'bench.db'}"},
                    "auth": {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1},
                    "exchanges": {"paper_starting_balances": {"USDT": 1e12}}}
        (directory / "settings.toml").write_text(render_settings(settings, state_dir=Path(scratch) / "state"))
        runtime = Runtime(directory, env="testing", plugins={"storage": botcriptofy_storage, "auth": botcriptofy_auth,
                                                             "exchanges": botcriptofy_exchanges}, discover=False, watch=False)
        await runtime.start()
        harness = KernelHarness(runtime, directory, Path(scratch) / "state")
        try:
            client = harness.client
            now = datetime.now(UTC)
            await _candles.store(harness.kernel, "binance", "BTC/USDT", "1h",
                                 [_candles.Candle(now - timedelta(hours=1), 100, 100, 100, 100, 1)])
            signed = (await client.post("/v1/auth/signup", json={"email": "bench@example.com", "password": "correct horse battery staple",
                                                                 "name": "Bench", "account_type": "trader"})).json()
            headers = {"Authorization": f"Bearer {signed['tokens']['access_token']}"}
            account = (await client.post("/v1/trading/accounts", headers=headers, json={"exchange": "paper"})).json()
            order = {"account_id": account["id"], "symbol": "BTC/USDT", "side": "buy", "type": "market", "amount": "0.01"}
            reads, writes = [], []
            for number in range(ORDERS):
                started = time.perf_counter()
                response = await client.get("/v1/trading/accounts", headers=headers)
                reads.append(time.perf_counter() - started)
                assert response.status_code == 200
                started = time.perf_counter()
                response = await client.post("/v1/trading/orders", headers={**headers, "Idempotency-Key": f"bench-{number}"}, json=order)
                writes.append(time.perf_counter() - started)
                assert response.status_code == 201 and response.json()["status"] == "filled", response.text
            p95_read, p95_write = percentile(reads, 95) * 1000, percentile(writes, 95) * 1000
            print(f"paper market orders, API to stored fill, in process on SQLite ({ORDERS} orders)")
            print(f"  order  p50 {statistics.median(writes) * 1000:6.2f} ms   p95 {p95_write:6.2f} ms")
            print(f"  GET /v1/trading/accounts (baseline)  p50 {statistics.median(reads) * 1000:6.2f} ms   p95 {p95_read:6.2f} ms")
            print(f"  order p95 / baseline p95: {p95_write / p95_read:.1f}x")
        finally:
            await harness.close()


async def bench_bots() -> None:
    import os

    import sqlalchemy as sa

    import botcriptofy_trading
    from botcriptofy_trading import _bots

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "settings"
        directory.mkdir()
        settings = {"storage": {"url": f"sqlite+aiosqlite:///{Path(scratch) / 'bots.db'}"},
                    "auth": {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1},
                    "exchanges": {"paper_starting_balances": {"USDT": 1e12}}, "trading": {"bot_lookback_bars": 60}}
        (directory / "settings.toml").write_text(render_settings(settings, state_dir=Path(scratch) / "state"))
        runtime = Runtime(directory, env="testing", plugins={"storage": botcriptofy_storage, "auth": botcriptofy_auth,
                                                             "exchanges": botcriptofy_exchanges, "trading": botcriptofy_trading},
                          discover=False, watch=False)
        await runtime.start()
        harness = KernelHarness(runtime, directory, Path(scratch) / "state")
        try:
            kernel, client = harness.kernel, harness.client
            signed = (await client.post("/v1/auth/signup", json={"email": "bots@example.com", "password": "correct horse battery staple",
                                                                 "name": "Bench", "account_type": "trader"})).json()
            headers = {"Authorization": f"Bearer {signed['tokens']['access_token']}"}
            account = (await client.post("/v1/trading/accounts", headers=headers, json={"exchange": "paper"})).json()
            async with kernel.database().session(system=True) as session:
                tenant = (await session.execute(sa.text("SELECT tenant_id FROM exchanges_accounts"))).scalar_one()
            start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=400)
            prices = 100 + np.cumsum(np.random.default_rng(7).normal(0, 0.5, 400))
            await _candles.store(kernel, "binance", "BTC/USDT", "1m",
                                 [_candles.Candle(start + timedelta(minutes=i), p, p, p, p, 1) for i, p in enumerate(prices[:60])])
            minute = 60
            ids: list[str] = []

            async def grow(count: int) -> None:
                while len(ids) < count:
                    body = {"name": f"b{len(ids)}", "strategy": "sma_crossover", "parameters": {"fast": 3, "slow": 8},
                            "account_id": account["id"], "symbol": "BTC/USDT", "timeframe": "1m", "order_amount": "0.01",
                            "max_position": "0.05"}
                    created = await _bots.create_bot(kernel, tenant, body)
                    async with kernel.database().session(tenant_id=tenant) as session:
                        await session.execute(sa.update(_bots.bots).where(_bots.bots.c.id == created["id"]).values(status="running", run=1))
                    ids.append(created["id"])

            async def one_minute(count: int) -> float:
                nonlocal minute
                price = float(prices[minute])
                moment = start + timedelta(minutes=minute)
                await _candles.store(kernel, "binance", "BTC/USDT", "1m", [_candles.Candle(moment, price, price, price, price, 1)])
                minute += 1
                began = time.perf_counter()
                await asyncio.gather(*(_bots.tick(kernel, tenant, bot_id, upto=moment) for bot_id in ids[:count]))
                return time.perf_counter() - began

            await grow(1)
            single = statistics.median([await one_minute(1) for _ in range(5)])
            print(f"bots per worker at a 1-minute cadence (simulated minutes, real tick path, SQLite, one process); load {os.getloadavg()}")
            print(f"  one bot's tick (baseline): {single * 1000:.1f} ms")
            best = 0
            for count in (10, 15, 20, 25, 50, 100, 200):
                await grow(count)
                lags = [await one_minute(count) for _ in range(3)]
                worst = max(lags)
                ratio = worst / single
                print(f"  {count:4d} bots: minute done in {worst:.2f} s (worst of 3), {ratio:.0f}x one tick, load {os.getloadavg()[0]:.1f}")
                if worst > 1.0:
                    break
                best = count
            print(f"  bots per worker before the lag exceeds 1 s: {best} (of the sizes tried)")
        finally:
            await harness.close()


def main() -> None:
    print(f"trading bench, {machine()}, numpy {np.__version__}")
    bench_backtests()
    asyncio.run(bench_orders())
    asyncio.run(bench_bots())


if __name__ == "__main__":
    main()
