"""Real exchanges through ccxt's asyncio API: one client per (exchange, account), so ccxt's throttle paces each.

ccxt spaces the requests of one client by the exchange's ``rateLimit`` (weighted per endpoint);
sharing a client between callers is what makes the pacing hold across concurrent requests. Keys
reach ccxt only here, opened from the secret box by the caller, and never appear in errors.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from botcriptofy import ProblemError

from ._settings import ExchangesSettings

log = logging.getLogger("botcriptofy.exchanges")

PROBLEMS = "https://botcriptofy.dev/problems/"


class RedactingLogger:
    """A logger for ccxt that replaces the client's credentials in every argument with their last 4 characters."""

    def __init__(self, logger: logging.Logger, secrets: list[str]) -> None:
        self._logger = logger
        self._secrets = secrets

    def _clean(self, value: Any) -> Any:
        if not self._secrets:
            return value
        text = str(value)
        for secret in self._secrets:
            text = text.replace(secret, "****" + secret[-4:])
        return text

    def _log(self, level: int, message: Any, *args: Any, **kwargs: Any) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, self._clean(message), *(self._clean(a) for a in args), **kwargs)

    def debug(self, message: Any, *args: Any, **kwargs: Any) -> None:
        self._log(logging.DEBUG, message, *args, **kwargs)

    def info(self, message: Any, *args: Any, **kwargs: Any) -> None:
        self._log(logging.INFO, message, *args, **kwargs)

    def warning(self, message: Any, *args: Any, **kwargs: Any) -> None:
        self._log(logging.WARNING, message, *args, **kwargs)

    def error(self, message: Any, *args: Any, **kwargs: Any) -> None:
        self._log(logging.ERROR, message, *args, **kwargs)

    def exception(self, message: Any, *args: Any, **kwargs: Any) -> None:
        self._log(logging.ERROR, message, *args, exc_info=True, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


def _ccxt() -> Any:
    # Imported on first use: ccxt takes most of a second to import, which every worker's start-up would pay.
    import ccxt.async_support

    return ccxt.async_support


def _errors() -> Any:
    from ccxt.base import errors

    return errors


def exchange_exists(exchange_id: str) -> bool:
    return exchange_id in _ccxt().exchanges


def _rebase(url: str, base: str) -> str:
    target = urlsplit(base)
    parts = urlsplit(url)
    return urlunsplit((target.scheme, target.netloc, target.path.rstrip("/") + parts.path, parts.query, parts.fragment))


def _rebase_all(value: Any, base: str) -> Any:
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return _rebase(value, base)
    if isinstance(value, dict):
        return {key: _rebase_all(item, base) for key, item in value.items()}
    return value


def build_client(settings: ExchangesSettings, exchange_id: str, *, api_key: str | None = None, secret: str | None = None) -> Any:
    """A ccxt asyncio client for ``exchange_id``: spot markets only, rate limit on, settings' base URL and pace applied."""
    if not exchange_exists(exchange_id):
        raise ProblemError(
            422,
            "Unknown exchange",
            f"ccxt knows no exchange '{exchange_id}'.",
            errors=[{"field": "exchange", "message": "unknown exchange"}],
        )
    config: dict[str, Any] = {
        "enableRateLimit": True,
        "timeout": int(settings.timeout * 1000),
        "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False, "defaultType": "spot"},
    }
    if api_key is not None:
        config["apiKey"] = api_key
        config["secret"] = secret
    if exchange_id in settings.rate_limit_ms:
        config["rateLimit"] = settings.rate_limit_ms[exchange_id]
    client = getattr(_ccxt(), exchange_id)(config)
    # ccxt logs every request's headers at debug level, API key included: its logger masks the credentials.
    client.logger = RedactingLogger(logging.getLogger(f"botcriptofy.exchanges.ccxt.{exchange_id}"), [v for v in (api_key, secret) if v])
    base = settings.api_urls.get(exchange_id)
    if base:
        client.urls["api"] = _rebase_all(client.urls["api"], base)
    return client


def translate(error: Exception, exchange_id: str) -> ProblemError:
    """An exchange's refusal as a problem naming the exchange, never echoing a request (it may carry keys)."""
    ccxt_errors = _errors()
    if isinstance(error, ccxt_errors.AuthenticationError | ccxt_errors.PermissionDenied):
        return ProblemError(
            422,
            "Exchange refused the credentials",
            f"{exchange_id} refused the API key: check it and its permissions.",
            type=PROBLEMS + "exchange-credentials",
            errors=[{"field": "api_key", "message": "refused by the exchange"}],
        )
    if isinstance(error, ccxt_errors.InsufficientFunds):
        return ProblemError(
            422,
            "Insufficient funds",
            f"{exchange_id} reports insufficient funds for this order.",
            type=PROBLEMS + "insufficient-funds",
            errors=[{"field": "amount", "message": "insufficient funds"}],
        )
    if isinstance(error, ccxt_errors.InvalidOrder | ccxt_errors.BadSymbol | ccxt_errors.BadRequest):
        return ProblemError(
            422,
            "Exchange refused the request",
            f"{exchange_id} refused the request ({type(error).__name__}).",
            type=PROBLEMS + "exchange-refused",
        )
    if isinstance(error, ccxt_errors.RateLimitExceeded | ccxt_errors.DDoSProtection):
        return ProblemError(
            503,
            "Exchange rate limit",
            f"{exchange_id} asks to slow down; retry later.",
            headers={"Retry-After": "5"},
            type=PROBLEMS + "exchange-unavailable",
        )
    return ProblemError(
        503,
        "Exchange unavailable",
        f"{exchange_id} could not be reached or failed ({type(error).__name__}); retry later.",
        headers={"Retry-After": "5"},
        type=PROBLEMS + "exchange-unavailable",
    )


async def call(client: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call a ccxt method, turning exchange and network errors into problems."""
    try:
        return await getattr(client, method)(*args, **kwargs)
    except Exception as error:
        if not isinstance(error, _errors().BaseError):
            raise
        log.warning("%s %s failed: %s", client.id, method, type(error).__name__, extra={"exchange": client.id, "method": method})
        raise translate(error, client.id) from None


# -- permission checks at link time -----------------------------------------------------------


async def _binance_permissions(client: Any) -> dict[str, bool]:
    restrictions = await call(client, "sapi_get_account_apirestrictions")
    return {
        "read": bool(restrictions.get("enableReading")),
        "trade": bool(restrictions.get("enableSpotAndMarginTrading")),
        "withdraw": bool(restrictions.get("enableWithdrawals")),
    }


PERMISSION_CHECKS = {"binance": _binance_permissions}


async def check_permissions(client: Any) -> dict[str, bool]:
    """Ask the exchange what the key may do; refuse a key that can withdraw, or that cannot read."""
    check = PERMISSION_CHECKS.get(client.id)
    if check is None:
        raise ProblemError(
            422,
            "Cannot verify the key's permissions",
            f"Linking {client.id} is not supported: its key permissions cannot be checked (supported: "
            f"{', '.join(sorted(PERMISSION_CHECKS))}).",
            errors=[{"field": "exchange", "message": "permissions cannot be verified"}],
        )
    permissions = await check(client)
    if permissions["withdraw"]:
        raise ProblemError(
            422,
            "Withdrawal permission refused",
            "This API key may withdraw funds. Create a key without withdrawal permission and link that one.",
            type=PROBLEMS + "withdrawal-permission",
            errors=[{"field": "api_key", "message": "the key has withdrawal permission"}],
        )
    if not permissions["read"]:
        raise ProblemError(
            422,
            "Key cannot read",
            "This API key cannot read the account; enable reading on the exchange.",
            errors=[{"field": "api_key", "message": "the key cannot read"}],
        )
    return permissions


@dataclass
class Clients:
    """The process's ccxt clients, one per (exchange, account or ``public``), closed at shutdown."""

    settings: ExchangesSettings
    clients: dict[tuple[str, str], Any] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def public(self, exchange_id: str) -> Any:
        async with self.lock:
            key = (exchange_id, "public")
            if key not in self.clients:
                self.clients[key] = build_client(self.settings, exchange_id)
            return self.clients[key]

    async def private(self, exchange_id: str, account_id: str, api_key: str, secret: str) -> Any:
        async with self.lock:
            key = (exchange_id, account_id)
            if key not in self.clients:
                self.clients[key] = build_client(self.settings, exchange_id, api_key=api_key, secret=secret)
            return self.clients[key]

    async def forget(self, exchange_id: str, account_id: str) -> None:
        async with self.lock:
            client = self.clients.pop((exchange_id, account_id), None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        async with self.lock:
            clients, self.clients = list(self.clients.values()), {}
        for client in clients:
            try:
                await client.close()
            except Exception:
                log.warning("could not close a ccxt client", exc_info=True)
