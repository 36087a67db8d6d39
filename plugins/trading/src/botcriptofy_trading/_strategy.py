"""Strategies: a name, a parameter model, and a vectorised rule turning prices into entry and exit signals.

A strategy sees only bar closes up to the bar it decides on; the backtest acts on the next bar's open.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

# numpy is imported inside the functions that use it: a worker serving no backtest or bot never loads it (~20 MB of RSS).
if TYPE_CHECKING:
    import numpy as np


class Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Strategy(ABC):
    """Base class: set ``name``, ``description`` and ``Parameters``; implement ``signals``.

    ``signals(close, params)`` returns an int8 array as long as ``close``: +1 where the strategy
    wants to be long after that bar's close, -1 where it wants to be flat, 0 where it has no opinion
    (the previous wish holds). Long-only, all-in; the backtest sizes and fills.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Parameters: ClassVar[type[BaseModel]] = Parameters

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return cls.Parameters.model_json_schema()

    @staticmethod
    @abstractmethod
    def signals(close: np.ndarray, params: Any) -> np.ndarray:
        """The strategy's rule (every subclass defines it; a contributed class without it is refused)."""


def is_strategy(cls: Any) -> bool:
    """Whether ``cls`` is a usable strategy: a :class:`Strategy` subclass with a name and its own ``signals``."""
    return (
        isinstance(cls, type) and issubclass(cls, Strategy) and bool(cls.name) and not getattr(cls.signals, "__isabstractmethod__", False)
    )


def sma(values: np.ndarray, period: int) -> np.ndarray:
    """Simple moving average; NaN until ``period`` values exist."""
    import numpy as np
    out = np.full(values.shape, np.nan)
    if len(values) >= period:
        cumulative = np.cumsum(np.insert(values.astype(float), 0, 0.0))
        out[period - 1 :] = (cumulative[period:] - cumulative[:-period]) / period
    return out


def rsi(values: np.ndarray, period: int) -> np.ndarray:
    """Wilder's relative strength index (0-100); NaN for the first ``period`` values."""
    import numpy as np
    out = np.full(values.shape, np.nan)
    if len(values) <= period:
        return out
    delta = np.diff(values.astype(float))
    gain = np.where(delta > 0, delta, 0.0)
    loss = np.where(delta < 0, -delta, 0.0)
    average_gain = gain[:period].mean()
    average_loss = loss[:period].mean()
    gains = np.empty(len(delta) - period + 1)
    losses = np.empty_like(gains)
    gains[0], losses[0] = average_gain, average_loss
    for index in range(1, len(gains)):  # Wilder's smoothing is recursive; one pass in C-speed numpy is not possible
        average_gain = (average_gain * (period - 1) + gain[period - 1 + index]) / period
        average_loss = (average_loss * (period - 1) + loss[period - 1 + index]) / period
        gains[index], losses[index] = average_gain, average_loss
    with np.errstate(divide="ignore", invalid="ignore"):
        strength = np.where(losses == 0, np.inf, gains / losses)
    out[period:] = 100 - 100 / (1 + strength)
    return out


class SmaCrossParameters(Parameters):
    fast: int = Field(10, ge=1, le=1000, description="Bars of the fast moving average.")
    slow: int = Field(20, ge=2, le=5000, description="Bars of the slow moving average.")

    @model_validator(mode="after")
    def _order(self) -> SmaCrossParameters:
        if self.fast >= self.slow:
            raise ValueError("fast must be shorter than slow")
        return self


class SmaCross(Strategy):
    name = "sma_crossover"
    description = "Buy when the fast simple moving average crosses above the slow one; sell when it crosses below."
    Parameters = SmaCrossParameters

    @staticmethod
    def signals(close: np.ndarray, params: Any) -> np.ndarray:
        import numpy as np
        fast, slow = sma(close, params.fast), sma(close, params.slow)
        above = fast > slow
        valid = ~(np.isnan(fast) | np.isnan(slow))
        before = np.roll(above, 1)
        before_valid = np.roll(valid, 1)
        before_valid[0] = False
        crossed_up = above & ~before & valid & before_valid
        crossed_down = ~above & before & valid & before_valid
        return crossed_up.astype(np.int8) - crossed_down.astype(np.int8)


class RsiReversionParameters(Parameters):
    period: int = Field(14, ge=2, le=500, description="Bars of the RSI.")
    lower: float = Field(30.0, gt=0, lt=100, description="Buy when the RSI is below this.")
    upper: float = Field(70.0, gt=0, lt=100, description="Sell when the RSI is above this.")

    @model_validator(mode="after")
    def _order(self) -> RsiReversionParameters:
        if self.lower >= self.upper:
            raise ValueError("lower must be below upper")
        return self


class RsiReversion(Strategy):
    name = "rsi_mean_reversion"
    description = "Buy when the RSI falls below the lower threshold (oversold); sell when it rises above the upper one."
    Parameters = RsiReversionParameters

    @staticmethod
    def signals(close: np.ndarray, params: Any) -> np.ndarray:
        import numpy as np
        value = rsi(close, params.period)
        with np.errstate(invalid="ignore"):
            return (value < params.lower).astype(np.int8) - (value > params.upper).astype(np.int8)


BUILT_IN: tuple[type[Strategy], ...] = (SmaCross, RsiReversion)
