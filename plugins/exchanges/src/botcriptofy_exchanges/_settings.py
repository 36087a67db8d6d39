"""The ``[default.exchanges]`` settings section."""

from __future__ import annotations

from pydantic import Field, field_validator

from botcriptofy import PluginSettings, SettingsSchema


class ExchangesSettings(PluginSettings):
    paper_fee_rate: float = Field(0.001, ge=0, le=0.1, description="Paper exchange fee, a fraction of each fill's cost (0.001 = 0.1 %).")
    paper_slippage_bps: float = Field(
        5.0, ge=0, le=1000, description="Paper market orders fill this many basis points worse than the price."
    )
    paper_starting_balances: dict[str, float] = Field(
        default_factory=lambda: {"USDT": 10_000.0}, description="What a new paper account holds, per asset."
    )
    paper_price_source: str = Field("binance", description="Exchange whose stored candles price paper orders when an account names none.")
    paper_live_prices: bool = Field(
        False, description="Price paper market orders from the source exchange's live ticker (ccxt) instead of stored candles."
    )
    live_exchanges: list[str] = Field(
        default_factory=lambda: ["binance"], description="Real exchanges traders may link (each needs a permission check, see docs)."
    )
    api_urls: dict[str, str] = Field(
        default_factory=dict, description="Exchange id -> base URL replacing the exchange's API host (testnets, recorded-response servers)."
    )
    rate_limit_ms: dict[str, int] = Field(
        default_factory=dict, description="Exchange id -> milliseconds between requests, overriding ccxt's own rate limit for it."
    )
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds for one exchange request.")

    @field_validator("paper_starting_balances")
    @classmethod
    def _assets_upper_case(cls, value: dict[str, float]) -> dict[str, float]:
        # Settings loaders may fold keys to lower case; asset codes are upper case.
        if any(amount < 0 for amount in value.values()):
            raise ValueError("starting balances cannot be negative")
        return {asset.upper(): amount for asset, amount in value.items()}


SCHEMA = SettingsSchema(
    model=ExchangesSettings,
    live=frozenset(
        {"paper_fee_rate", "paper_slippage_bps", "paper_starting_balances", "paper_price_source", "paper_live_prices", "live_exchanges"}
    ),
)
