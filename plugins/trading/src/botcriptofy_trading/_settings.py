"""The ``[default.trading]`` settings section."""

from __future__ import annotations

from pydantic import Field

from botcriptofy import PluginSettings, SettingsSchema


class TradingSettings(PluginSettings):
    max_backtest_candles: int = Field(1_000_000, ge=10, description="Most candles one backtest may read.")
    backtest_concurrency: int = Field(2, ge=1, le=32, description="Backtests running at once in this process.")
    equity_points: int = Field(500, ge=10, le=100_000, description="Points of the equity curve kept in a result (evenly sampled).")
    bot_poll_seconds: float = Field(60.0, ge=0.2, le=86_400, description="Seconds a running bot waits between ticks.")
    bot_lookback_bars: int = Field(500, ge=10, le=100_000, description="Bars before now a bot's tick reads to compute its signal.")
    bot_tick_timeout: float = Field(60.0, ge=1, le=3600, description="Seconds one tick may take before it is retried on another worker.")
    bot_segment_ticks: int = Field(
        500, ge=1, le=10_000, description="Ticks one bot workflow execution runs before it hands over to the next."
    )


SCHEMA = SettingsSchema(
    model=TradingSettings, live=frozenset({"max_backtest_candles", "equity_points", "bot_poll_seconds", "bot_lookback_bars"})
)
