"""HTTP under ``/v1/trading``: exchange accounts, markets, candles, paper balances and orders."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from botcriptofy import ProblemError, Route, kernel_of, require

from . import _candles, _service
from ._ccxt import call, exchange_exists
from ._state import state_of

SYMBOL = re.compile(r"^[A-Za-z0-9]{1,20}/[A-Za-z0-9]{1,20}$")
TAGS = ("trading",)


def _reasonable(value: datetime) -> datetime:
    if not 1970 <= value.year <= 2200:
        raise ValueError("use a time between 1970 and 2200")
    return value


# A time with its offset (naive times are ambiguous), within a range every database and clock can hold.
Instant = Annotated[AwareDatetime, AfterValidator(_reasonable)]


class AccountIn(BaseModel):
    exchange: str = Field(min_length=2, max_length=40, description="'paper', or a real exchange's ccxt id (binance).")
    label: str = Field("", max_length=100)
    api_key: str | None = Field(None, min_length=8, max_length=512, description="Never returned; only its last 4 characters are shown.")
    api_secret: str | None = Field(None, min_length=8, max_length=512, description="Never returned.")
    price_source: str | None = Field(
        None, min_length=2, max_length=40, description="Paper accounts: the exchange whose prices fill orders."
    )


class AccountOut(BaseModel):
    id: str
    exchange: str
    label: str
    paper: bool
    price_source: str | None
    api_key_hint: str | None
    permissions: dict[str, bool]
    created_at: datetime


class OrderIn(BaseModel):
    account_id: str = Field(min_length=1, max_length=36)
    symbol: str = Field(description="BASE/QUOTE, such as BTC/USDT.")
    side: Literal["buy", "sell"]
    type: Literal["market", "limit"]
    amount: Decimal = Field(gt=0, le=Decimal("1e15"), max_digits=28, decimal_places=12)
    price: Decimal | None = Field(
        None, gt=0, le=Decimal("1e15"), max_digits=28, decimal_places=12, description="Required for limit orders."
    )

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        if not SYMBOL.match(value):
            raise ValueError("use BASE/QUOTE, such as BTC/USDT")
        return value.upper()


class FillOut(BaseModel):
    price: str
    amount: str
    fee: str
    filled_at: datetime


class OrderOut(BaseModel):
    id: str
    account_id: str
    client_key: str
    exchange_order_id: str | None
    symbol: str
    side: str
    type: str
    amount: str
    price: str | None
    status: str
    filled: str
    average: str | None
    fee: str
    fee_asset: str | None
    created_at: datetime
    closed_at: datetime | None
    fills: list[FillOut] = []


class OrdersQuery(BaseModel):
    account_id: str | None = Field(None, max_length=36)
    limit: int = Field(100, ge=1, le=1000)


class BalancesQuery(BaseModel):
    account_id: str = Field(min_length=1, max_length=36)


class MarketsQuery(BaseModel):
    exchange: str = Field("paper", min_length=2, max_length=40)


class CandlesQuery(BaseModel):
    exchange: str = Field(min_length=2, max_length=40)
    symbol: str = Field(min_length=3, max_length=40)
    timeframe: str = Field("1h", max_length=8)
    start: Instant | None = None
    end: Instant | None = None
    limit: int = Field(500, ge=1, le=10_000)


class ImportIn(BaseModel):
    exchange: str = Field(min_length=2, max_length=40, description="The series' source name (an exchange id or your own).")
    symbol: str = Field(min_length=3, max_length=40)
    timeframe: str = Field(max_length=8)
    csv: str = Field(min_length=1, max_length=20_000_000, description="time,open,high,low,close[,volume] with a header row.")


class FetchIn(BaseModel):
    exchange: str = Field(min_length=2, max_length=40)
    symbol: str = Field(min_length=3, max_length=40)
    timeframe: str = Field("1h", max_length=8)
    since: Instant | None = None
    limit: int = Field(500, ge=1, le=1000)


async def _tenant(request: Request) -> str:
    actor = await require(request)
    if actor.tenant_id is None:
        raise ProblemError(403, "Forbidden", "Exchange accounts belong to a tenant; this caller has none.")
    return actor.tenant_id


async def link(request: Request, body: AccountIn) -> Response:
    """Link an exchange account (paper, or a real exchange with a key that cannot withdraw)."""
    tenant = await _tenant(request)
    view = await _service.link_account(
        kernel_of(request),
        tenant,
        exchange=body.exchange.lower(),
        label=body.label,
        api_key=body.api_key,
        api_secret=body.api_secret,
        price_source=body.price_source,
    )
    return Response(AccountOut(**view).model_dump_json(), 201, media_type="application/json")


async def list_accounts(request: Request) -> list[dict[str, Any]]:
    """The tenant's exchange accounts (key hints only)."""
    return await _service.list_accounts(kernel_of(request), await _tenant(request))


async def unlink(request: Request) -> Response:
    """Unlink an account: its sealed keys, paper balances and orders are deleted."""
    await _service.unlink_account(kernel_of(request), await _tenant(request), request.path_params["account_id"])
    return Response(status_code=204)


async def markets(request: Request, query: MarketsQuery) -> dict[str, Any]:
    """Markets of an exchange: stored candle series for 'paper' or a source name, the exchange's spot markets through ccxt."""
    await require(request)
    kernel = kernel_of(request)
    exchange = query.exchange.lower()
    settings = state_of(kernel).settings
    # "paper" lists what can price paper orders: stored series only, no call to any exchange.
    source = settings.paper_price_source if exchange == "paper" else exchange
    stored = await _candles.symbols(kernel, source)
    live: list[str] = []
    if exchange in settings.live_exchanges and exchange_exists(exchange):
        client = await state_of(kernel).clients.public(exchange)
        loaded = await call(client, "load_markets")
        live = sorted(symbol for symbol, market in loaded.items() if market.get("spot"))
    exchange = source
    return {"exchange": exchange, "stored": stored, "markets": live}


async def candles(request: Request, query: CandlesQuery) -> dict[str, Any]:
    """Stored candles of one series, with the gaps found in what is returned."""
    await require(request)
    _candles.parse_timeframe(query.timeframe)
    found = await _candles.load(
        kernel_of(request), query.exchange, query.symbol, query.timeframe, start=query.start, end=query.end, limit=query.limit
    )
    return {
        "exchange": query.exchange,
        "symbol": query.symbol,
        "timeframe": query.timeframe,
        "candles": [c.as_dict() for c in found],
        "gaps": _candles.find_gaps([c.time for c in found], query.timeframe),
    }


async def import_candles(request: Request, body: ImportIn) -> dict[str, Any]:
    """Import candles from CSV into the platform's market data."""
    await require(request, "marketdata:import")
    _candles.parse_timeframe(body.timeframe)
    rows = _candles.parse_csv(body.csv)
    written = await _candles.store(kernel_of(request), body.exchange, body.symbol, body.timeframe, rows)
    times = sorted(c.time for c in rows)
    return {"written": written, "gaps": _candles.find_gaps(times, body.timeframe)}


async def fetch_candles(request: Request, body: FetchIn) -> dict[str, Any]:
    """Fetch candles from an exchange through ccxt and store them."""
    await require(request, "marketdata:import")
    kernel = kernel_of(request)
    _candles.parse_timeframe(body.timeframe)
    client = await state_of(kernel).clients.public(body.exchange.lower())
    since = int(body.since.timestamp() * 1000) if body.since is not None else None
    raw = await call(client, "fetch_ohlcv", body.symbol, body.timeframe, since, body.limit)
    rows = _candles.ccxt_rows(raw)
    written = await _candles.store(kernel, body.exchange.lower(), body.symbol, body.timeframe, rows)
    return {"written": written, "gaps": _candles.find_gaps([c.time for c in rows], body.timeframe)}


async def place_order(request: Request, body: OrderIn) -> Response:
    """Place an order; the Idempotency-Key header is required and an order is placed once per key."""
    tenant = await _tenant(request)
    key = request.headers.get("idempotency-key")
    if not key:
        raise ProblemError(
            428,
            "Idempotency-Key required",
            "Orders need an Idempotency-Key header (a UUID per order) so a retry never places a second order.",
            errors=[{"field": "Idempotency-Key", "message": "required", "in": "header"}],
        )
    if body.type == "limit" and body.price is None:
        raise ProblemError(
            422,
            "Validation failed",
            "A limit order needs a price.",
            errors=[{"field": "price", "message": "required for limit orders", "in": "body"}],
        )
    if body.type == "market" and body.price is not None:
        raise ProblemError(
            422,
            "Validation failed",
            "A market order takes no price.",
            errors=[{"field": "price", "message": "not allowed for market orders", "in": "body"}],
        )
    request_ = _service.OrderRequest(body.account_id, body.symbol, body.side, body.type, body.amount, body.price)
    order, created = await _service.place_order(kernel_of(request), tenant, key, request_)
    return Response(OrderOut(**order).model_dump_json(), 201 if created else 200, media_type="application/json")


async def list_orders(request: Request, query: OrdersQuery) -> list[dict[str, Any]]:
    """The tenant's orders, newest first, with their fills (resting paper orders are matched against new prices first)."""
    tenant = await _tenant(request)
    kernel = kernel_of(request)
    if query.account_id is not None:
        await _service.sweep(kernel, tenant, await _service.get_account(kernel, tenant, query.account_id))
    return await _service.list_orders(kernel, tenant, query.account_id, query.limit)


async def cancel_order(request: Request) -> dict[str, Any]:
    """Cancel a resting paper order, releasing what it held."""
    return await _service.cancel_order(kernel_of(request), await _tenant(request), request.path_params["order_id"])


async def paper_balances(request: Request, query: BalancesQuery) -> dict[str, Any]:
    """A paper account's balances, equity and P&L in its valuation asset."""
    return await _service.paper_balances(kernel_of(request), await _tenant(request), query.account_id)


def routes() -> list[BaseRoute]:
    base = "/v1/trading"
    return [
        Route(
            f"{base}/accounts",
            link,
            methods=["POST"],
            body=AccountIn,
            status_code=201,
            authenticated=True,
            tags=TAGS,
            responses={403: "Plan limit reached", 422: "Invalid account or key refused"},
        ),
        Route(f"{base}/accounts", list_accounts, response=list[AccountOut], authenticated=True, tags=TAGS),
        Route(f"{base}/accounts/{{account_id}}", unlink, methods=["DELETE"], status_code=204, authenticated=True, tags=TAGS),
        Route(f"{base}/markets", markets, query=MarketsQuery, response=dict[str, Any], authenticated=True, tags=TAGS),
        Route(f"{base}/candles", candles, query=CandlesQuery, response=dict[str, Any], authenticated=True, tags=TAGS),
        Route(
            f"{base}/candles/import",
            import_candles,
            methods=["POST"],
            body=ImportIn,
            response=dict[str, Any],
            permission="marketdata:import",
            tags=TAGS,
            max_body=32 * 1024 * 1024,
        ),
        Route(
            f"{base}/candles/fetch",
            fetch_candles,
            methods=["POST"],
            body=FetchIn,
            response=dict[str, Any],
            permission="marketdata:import",
            tags=TAGS,
        ),
        Route(
            f"{base}/orders",
            place_order,
            methods=["POST"],
            body=OrderIn,
            status_code=201,
            authenticated=True,
            tags=TAGS,
            responses={428: "Idempotency-Key required", 403: "Plan limit reached", 404: "No such account", 409: "Keys cannot be opened"},
        ),
        Route(
            f"{base}/orders",
            list_orders,
            query=OrdersQuery,
            response=list[OrderOut],
            authenticated=True,
            tags=TAGS,
            responses={404: "No such account"},
        ),
        Route(
            f"{base}/orders/{{order_id}}",
            cancel_order,
            methods=["DELETE"],
            response=OrderOut,
            authenticated=True,
            tags=TAGS,
            responses={409: "Order not open"},
        ),
        Route(
            f"{base}/paper/balances",
            paper_balances,
            query=BalancesQuery,
            response=dict[str, Any],
            authenticated=True,
            tags=TAGS,
            responses={404: "No such account"},
        ),
    ]


__all__ = ["routes"]
