"""The backtest engine: signals are computed once over the whole series (vectorised); fills loop over trades, not bars.

Conventions (those of backtesting.py with ``trade_on_close=False``): a signal after bar *i*'s close
fills at bar *i+1*'s open; long-only and all-in; the fee is charged on entry and on exit as a
fraction of the traded value; equity is marked at every bar's close. A position still open at the
end is valued at the last close and is not counted as a closed trade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

# numpy is imported inside the functions that use it: a worker serving no backtest or bot never loads it (~20 MB of RSS).
if TYPE_CHECKING:
    import numpy as np


SECONDS_PER_YEAR = 365.25 * 86400


@dataclass(frozen=True, slots=True)
class Series:
    time: list[datetime]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> Series:
        import numpy as np

        return cls(
            time=[row["time"] for row in rows],
            open=np.fromiter((row["open"] for row in rows), float, len(rows)),
            high=np.fromiter((row["high"] for row in rows), float, len(rows)),
            low=np.fromiter((row["low"] for row in rows), float, len(rows)),
            close=np.fromiter((row["close"] for row in rows), float, len(rows)),
        )


def desired_position(signals: np.ndarray) -> np.ndarray:
    """Carry each +1/-1 wish forward until the next one (vectorised forward fill); 1 long, 0 flat."""
    import numpy as np

    index = np.where(signals != 0, np.arange(len(signals)), 0)
    np.maximum.accumulate(index, out=index)
    held = signals[index]
    held[(index == 0) & (signals[0] == 0)] = 0
    return (held > 0).astype(np.int8)


def run(
    series: Series, signals: np.ndarray, *, cash: float, fee_rate: float, slippage_bps: float = 0.0, whole_units: bool = False
) -> dict[str, Any]:
    """Backtest ``signals`` over ``series``; return trades, the equity curve and the statistics."""
    import numpy as np

    bars = len(series.close)
    wanted = desired_position(signals)
    # Position changes act on the next bar's open: a change after bar i's close trades at bar i+1.
    held = np.concatenate(([0], wanted[:-1])).astype(np.int8)
    change = np.flatnonzero(np.diff(np.concatenate(([0], held))) != 0)
    slip = slippage_bps / 10_000
    equity = np.empty(bars)
    trades: list[dict[str, Any]] = []
    balance = float(cash)
    units = 0.0
    entry_bar = -1
    entry_price = entry_fee = 0.0
    fees = 0.0
    cursor = 0
    for bar in change:
        bar = int(bar)
        if bar >= bars:
            break
        # Bars before this one are marked with the position held over them.
        equity[cursor:bar] = balance + units * series.close[cursor:bar]
        cursor = bar
        price = series.open[bar]
        if held[bar] == 1:
            fill = price * (1 + slip)
            affordable = balance / (fill * (1 + fee_rate))
            size = math.floor(affordable * (1 - 1e-15)) if whole_units else affordable
            if size <= 0:
                continue
            entry_fee = size * fill * fee_rate
            balance -= size * fill + entry_fee
            units, entry_bar, entry_price = size, bar, fill
            fees += entry_fee
        elif units:
            fill = price * (1 - slip)
            exit_fee = units * fill * fee_rate
            balance += units * fill - exit_fee
            fees += exit_fee
            profit = units * (fill - entry_price) - entry_fee - exit_fee
            trades.append(
                {
                    "entry_time": series.time[entry_bar],
                    "exit_time": series.time[bar],
                    "entry_price": entry_price,
                    "exit_price": fill,
                    "size": units,
                    "fees": entry_fee + exit_fee,
                    "profit": profit,
                    "return_percent": profit / (units * entry_price) * 100,
                }
            )
            units = 0.0
    equity[cursor:] = balance + units * series.close[cursor:]
    open_position = None
    if units:
        open_position = {
            "entry_time": series.time[entry_bar],
            "entry_price": entry_price,
            "size": units,
            "unrealised_profit": units * (series.close[-1] - entry_price) - entry_fee,
        }
    return {"trades": trades, "open_position": open_position, "equity": equity, "fees": fees, **statistics(series, equity, trades, cash)}


def statistics(series: Series, equity: np.ndarray, trades: list[dict[str, Any]], cash: float) -> dict[str, Any]:
    import numpy as np

    peaks = np.maximum.accumulate(equity)
    drawdown = 1 - equity / peaks
    returns = np.diff(equity) / equity[:-1] if len(equity) > 1 else np.array([])
    sharpe = None
    if len(returns) > 1 and returns.std(ddof=1) > 0 and len(series.time) > 1:
        span = (series.time[-1] - series.time[0]).total_seconds()
        periods_per_year = (len(series.time) - 1) / span * SECONDS_PER_YEAR if span > 0 else 0
        sharpe = float(returns.mean() / returns.std(ddof=1) * math.sqrt(periods_per_year))
    wins = sum(1 for trade in trades if trade["profit"] > 0)
    return {
        "return_percent": float((equity[-1] - cash) / cash * 100) if len(equity) else 0.0,
        "final_equity": float(equity[-1]) if len(equity) else cash,
        "max_drawdown_percent": float(drawdown.max() * 100) if len(equity) else 0.0,
        "sharpe": sharpe,
        "win_rate_percent": wins / len(trades) * 100 if trades else None,
        "trade_count": len(trades),
    }
