"""Strategies and backtests: the API's results agree with backtesting.py on the same real data and strategy.

Tolerance: return, maximum drawdown and win rate within 1e-6 percentage points, and the same number of
closed trades. Both fill a signal at the next bar's open, buy whole units with all the cash, and charge
the fee on entry and on exit; the engines agree exactly on these data (EUR/USD hourly, 5 000 bars, and
BTC/USD monthly, shipped by the backtesting package).
"""

from __future__ import annotations

import math
import warnings

import pytest
from backtesting import Backtest
from backtesting import Strategy as ReferenceStrategy
from backtesting.test import EURUSD

from botcriptofy.testing import wait_until
from botcriptofy_exchanges import _candles
from botcriptofy_trading import rsi, sma
from support import trader_signup as signup

TOLERANCE = 1e-6


class ReferenceSmaCross(ReferenceStrategy):
    fast = 10
    slow = 20

    def init(self) -> None:
        self.fast_line = self.I(sma, self.data.Close, self.fast)
        self.slow_line = self.I(sma, self.data.Close, self.slow)

    def next(self) -> None:
        fast, slow = self.fast_line, self.slow_line
        if not self.position and fast[-2] < slow[-2] and fast[-1] > slow[-1]:
            self.buy()
        elif self.position and fast[-2] > slow[-2] and fast[-1] < slow[-1]:
            self.position.close()


class ReferenceRsi(ReferenceStrategy):
    period = 14
    lower = 30.0
    upper = 70.0

    def init(self) -> None:
        self.value = self.I(rsi, self.data.Close, self.period)

    def next(self) -> None:
        if not self.position and self.value[-1] < self.lower:
            self.buy()
        elif self.position and self.value[-1] > self.upper:
            self.position.close()


def reference(strategy: type[ReferenceStrategy], **parameters: float) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # backtesting.py warns about trades left open at the end
        stats = Backtest(EURUSD, strategy, cash=10_000, commission=0.002).run(**parameters)
    return {
        "return": stats["Return [%]"],
        "drawdown": -stats["Max. Drawdown [%]"],
        "trades": stats["# Trades"],
        "win_rate": stats["Win Rate [%]"],
    }


async def run_backtest(client, headers, body):
    created = await client.post("/v1/backtests", headers=headers, json=body)
    assert created.status_code == 202, created.text
    location = created.headers["location"]
    result = {}

    async def done() -> bool:
        result.update((await client.get(location, headers=headers)).json())
        return result["status"] in ("succeeded", "failed")

    await wait_until(done, timeout=30)
    assert result["status"] == "succeeded", result
    return result["result"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_backtests_agree_with_backtesting_py(make_trading):
    harness = await make_trading()
    symbol, timeframe, rows = _candles.sample_candles("EURUSD")
    await _candles.store(harness.kernel, "sample", symbol, timeframe, rows)
    headers, _ = await signup(harness.client, "dan@example.com")

    listed = {s["name"]: s for s in (await harness.client.get("/v1/trading/strategies", headers=headers)).json()}
    assert {"sma_crossover", "rsi_mean_reversion"} <= set(listed)
    assert listed["sma_crossover"]["parameters"]["properties"]["fast"]["default"] == 10

    base = {"exchange": "sample", "symbol": symbol, "timeframe": timeframe, "cash": 10_000, "fee_rate": 0.002, "whole_units": True}
    for name, reference_class, parameters in (
        ("sma_crossover", ReferenceSmaCross, {"fast": 10, "slow": 20}),
        ("rsi_mean_reversion", ReferenceRsi, {"period": 14, "lower": 30, "upper": 70}),
    ):
        ours = await run_backtest(harness.client, headers, {**base, "strategy": name, "parameters": parameters})
        expected = reference(reference_class, **parameters)
        assert ours["candles"] == 5000
        assert ours["trade_count"] == expected["trades"] > 0
        assert abs(ours["return_percent"] - expected["return"]) < TOLERANCE
        assert abs(ours["max_drawdown_percent"] - expected["drawdown"]) < TOLERANCE
        assert abs(ours["win_rate_percent"] - expected["win_rate"]) < TOLERANCE
        assert ours["fees"] > 0 and ours["sharpe"] is not None and math.isfinite(ours["sharpe"])
        assert len(ours["trades"]) == ours["trade_count"] and len(ours["equity_curve"]) == 500

    unknown = await harness.client.post("/v1/backtests", headers=headers, json={**base, "strategy": "nope"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "strategy"
    bad = await harness.client.post("/v1/backtests", headers=headers, json={**base, "strategy": "sma_crossover", "parameters": {"fast": 0}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "parameters.fast"
    missing = await run_backtest_failing(harness.client, headers, {**base, "strategy": "sma_crossover", "symbol": "NOPE/USD"})
    assert "candle" in missing["error"]


async def run_backtest_failing(client, headers, body):
    created = (await client.post("/v1/trading/backtests", headers=headers, json=body)).json()
    found = {}

    async def done() -> bool:
        found.update((await client.get(f"/v1/trading/backtests/{created['id']}", headers=headers)).json())
        return found["status"] == "failed"

    await wait_until(done, timeout=10)
    return found


STRATEGY_PLUGIN = """
import numpy as np
from botcriptofy import hookimpl
from botcriptofy_trading import Parameters, Strategy


class AlwaysLong(Strategy):
    name = "always_long_{name}"
    description = "Buy on the first bar and hold."
    Parameters = Parameters

    @staticmethod
    def signals(close, params):
        out = np.zeros(len(close), dtype=np.int8)
        out[0] = 1
        return out


@hookimpl(optionalhook=True)
def register_strategies(kernel):
    return [AlwaysLong]
"""


async def test_a_pip_installed_plugin_contributes_a_strategy(install_plugin, kernel_harness, tmp_path):
    import importlib

    import botcriptofy_storage
    import botcriptofy_trading

    _, name = install_plugin("strategy", STRATEGY_PLUGIN)
    module = importlib.import_module(f"bcf_test_{name}")
    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "trading": botcriptofy_trading, name: module},
        settings={"storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}},
    )
    from botcriptofy_trading._backtests import strategies

    found = await strategies(harness.kernel)
    assert f"always_long_{name}" in found and found[f"always_long_{name}"].schema()["type"] == "object"


async def test_a_contributed_class_without_its_own_signals_or_name_is_refused(kernel_harness, tmp_path, caplog):
    import botcriptofy_storage
    import botcriptofy_trading
    from botcriptofy import hookimpl
    from botcriptofy_trading import Strategy
    from botcriptofy_trading._backtests import strategies

    class NoRule(Strategy):
        name = "no_rule"

    class NotAStrategy:
        name = "plain"

        @staticmethod
        def signals(close, params):
            return close

    class Contributor:
        @hookimpl(optionalhook=True)
        def register_strategies(self, kernel):
            return [NoRule, NotAStrategy]

    harness = await kernel_harness(
        plugins={"storage": botcriptofy_storage, "trading": botcriptofy_trading, "contributor": Contributor()},
        settings={"storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}},
    )
    found = await strategies(harness.kernel)
    assert "no_rule" not in found and "plain" not in found and {"sma_crossover", "rsi_mean_reversion"} <= set(found)
    assert sum("contributes" in record.getMessage() for record in caplog.records) == 2
