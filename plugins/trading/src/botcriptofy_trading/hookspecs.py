"""Hooks the trading plugin declares (through ``register_hookspecs``) for other plugins to implement.

Implement them with ``@hookimpl(optionalhook=True)`` so your plugin still loads without this one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botcriptofy import hookspec


@hookspec
def register_strategies(kernel: Any) -> list[type[Any]] | None:
    """Contribute strategy classes (subclasses of :class:`botcriptofy_trading.Strategy`).

    A class names itself (``name``, unique), describes itself (``description``) and declares its
    parameters as a pydantic model (``Parameters``): the API lists its JSON schema and validates
    every backtest's parameters against it.

    :return: a list of strategy classes, or None.
    """


@hookspec(firstresult=True)
def load_candles(
    kernel: Any, exchange: str, symbol: str, timeframe: str, start: datetime | None, end: datetime | None
) -> list[dict[str, Any]] | None:
    """Return the stored OHLCV candles of a series in time order (the exchanges plugin implements this).

    Stops at first non-None result.

    :return: dicts with ``time``, ``open``, ``high``, ``low``, ``close``, ``volume``; or None when the plugin has no market data.
    """


@hookspec(firstresult=True)
def trading_account(kernel: Any, tenant_id: str, account_id: str) -> dict[str, Any] | None:
    """Describe one of the tenant's exchange accounts for a bot (the exchanges plugin implements this).

    Stops at first non-None result.

    :return: a dict with at least ``id``, ``exchange``, ``paper`` and ``price_source`` (never keys);
        None when the tenant has no such account.
    """


@hookspec(firstresult=True)
def place_order(
    kernel: Any, tenant_id: str, account_id: str, key: str, symbol: str, side: str, type: str, amount: str, price: str | None
) -> dict[str, Any] | None:
    """Place an order on the tenant's exchange account once per ``(account, key)`` (the exchanges plugin implements this).

    Stops at first non-None result. A repeated ``key`` answers with the order it placed first, so a
    bot's retried tick never places a second order. Raises ``ProblemError`` when the order is refused
    (4xx: insufficient funds, no price, a quota) or its outcome is unknown (5xx).

    :return: the order: ``id``, ``status``, ``amount``, ``filled``, ``average``, ``fee``, ``fills``; None when no plugin places orders.
    """
