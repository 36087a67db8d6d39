"""HTTP: bots (``/v1/trading/bots``) and saved strategies (``/v1/trading/strategies/saved``), problem+json."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from botcriptofy import Route, kernel_of

from . import _bots
from ._routes import TAGS, _tenant

Amount = Decimal


class SavedStrategyIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    strategy: str = Field(min_length=1, max_length=100)
    parameters: dict[str, Any] = Field(default_factory=dict)


class SavedStrategyOut(BaseModel):
    id: str
    name: str
    strategy: str
    parameters: dict[str, Any]
    created_at: datetime


class BotIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    strategy: str | None = Field(None, min_length=1, max_length=100, description="A strategy's name (with parameters)...")
    parameters: dict[str, Any] = Field(default_factory=dict)
    strategy_id: str | None = Field(None, max_length=36, description="...or a saved strategy's id.")
    account_id: str = Field(min_length=1, max_length=36)
    symbol: str = Field(min_length=3, max_length=40, pattern=r"^[A-Za-z0-9]+/[A-Za-z0-9]+$")
    timeframe: str = Field("1m", min_length=2, max_length=8)
    order_amount: Amount = Field(gt=0, le=Decimal("1e12"), description="Base units bought per entry signal.")
    max_position: Amount = Field(gt=0, le=Decimal("1e12"), description="Most base units the bot may hold (and have on order).")
    max_daily_loss: Amount | None = Field(None, gt=0, le=Decimal("1e12"), description="Quote units lost today (UTC) that stop the bot.")
    stop_loss_percent: Amount | None = Field(None, gt=0, lt=100, description="Fall below the average entry that sells and stops the bot.")

    @field_validator("timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        _bots.timeframe_seconds(value)
        return value


class RiskOut(BaseModel):
    max_position: str
    max_daily_loss: str | None
    stop_loss_percent: str | None


class BotOut(BaseModel):
    id: str
    name: str
    strategy: str
    parameters: dict[str, Any]
    account_id: str
    source: str
    symbol: str
    timeframe: str
    order_amount: str
    risk: RiskOut
    status: str
    stop_reason: str | None
    last_candle_at: datetime | None
    created_at: datetime
    updated_at: datetime


class Paging(BaseModel):
    limit: int = Field(100, ge=1, le=1000)


async def create_strategy(request: Request, body: SavedStrategyIn) -> Response:
    """Save a strategy with its parameters (counts against the plan's ``strategies``)."""
    saved = await _bots.save_strategy(kernel_of(request), await _tenant(request), body.name, body.strategy, body.parameters)
    return Response(SavedStrategyOut(**saved).model_dump_json(), 201, media_type="application/json")


async def list_strategies(request: Request) -> list[dict[str, Any]]:
    """The tenant's saved strategies."""
    return await _bots.list_saved(kernel_of(request), await _tenant(request))


async def delete_strategy(request: Request) -> Response:
    """Delete a saved strategy (frees its plan slot)."""
    await _bots.delete_saved(kernel_of(request), await _tenant(request), request.path_params["strategy_id"])
    return Response(status_code=204)


async def create_bot(request: Request, body: BotIn) -> Response:
    """Create a bot (not started): strategy and parameters, exchange account, market, order size and risk limits."""
    created = await _bots.create_bot(kernel_of(request), await _tenant(request), body.model_dump(mode="json"))
    return Response(
        BotOut(**created).model_dump_json(), 201, media_type="application/json", headers={"Location": f"/v1/trading/bots/{created['id']}"}
    )


async def list_bots(request: Request) -> list[dict[str, Any]]:
    """The tenant's bots with their status."""
    return await _bots.list_bots(kernel_of(request), await _tenant(request))


async def get_bot(request: Request) -> dict[str, Any]:
    """A bot's configuration and status (``created``, ``running``, ``paused``, ``stopped`` with ``stop_reason``)."""
    return _bots.view(await _bots.get_row(kernel_of(request), await _tenant(request), request.path_params["bot_id"]))


async def start_bot(request: Request) -> dict[str, Any]:
    """Start (or resume) the bot as durable work on the workflows plugin; a running bot answers as it is."""
    return await _bots.start_bot(kernel_of(request), await _tenant(request), request.path_params["bot_id"])


async def stop_bot(request: Request) -> dict[str, Any]:
    """Stop the bot (publishes ``trading.bot_stopped``); an order in flight completes."""
    return await _bots.halt_bot(kernel_of(request), await _tenant(request), request.path_params["bot_id"], "stopped")


async def pause_bot(request: Request) -> dict[str, Any]:
    """Pause a running bot; start it again to resume."""
    return await _bots.halt_bot(kernel_of(request), await _tenant(request), request.path_params["bot_id"], "paused")


async def delete_bot(request: Request) -> Response:
    """Delete a bot that is not running, with its decisions, orders and fills; frees its plan slot."""
    await _bots.delete_bot(kernel_of(request), await _tenant(request), request.path_params["bot_id"])
    return Response(status_code=204)


async def bot_orders(request: Request, query: Paging) -> list[dict[str, Any]]:
    """The bot's orders, newest first, with the decision behind each."""
    return await _bots.orders_of(kernel_of(request), await _tenant(request), request.path_params["bot_id"], query.limit)


async def bot_fills(request: Request, query: Paging) -> list[dict[str, Any]]:
    """The bot's fills, newest first, with the profit each sell realised."""
    return await _bots.fills_of(kernel_of(request), await _tenant(request), request.path_params["bot_id"], query.limit)


async def bot_decisions(request: Request, query: Paging) -> list[dict[str, Any]]:
    """Every decision the bot took, one per candle, newest first."""
    return await _bots.decisions_of(kernel_of(request), await _tenant(request), request.path_params["bot_id"], query.limit)


async def bot_pnl(request: Request) -> dict[str, Any]:
    """Position, average entry, realised and unrealised profit, fees, net and today's P&L."""
    return await _bots.pnl(kernel_of(request), await _tenant(request), request.path_params["bot_id"])


def routes() -> list[BaseRoute]:
    base = "/v1/trading/bots"
    one = base + "/{bot_id}"
    common: dict[str, Any] = {"authenticated": True, "tags": TAGS}
    return [
        Route("/v1/trading/strategies/saved", create_strategy, methods=["POST"], body=SavedStrategyIn, status_code=201, **common),
        Route("/v1/trading/strategies/saved", list_strategies, response=list[SavedStrategyOut], name="list_saved_strategies", **common),
        Route("/v1/trading/strategies/saved/{strategy_id}", delete_strategy, methods=["DELETE"], status_code=204, **common),
        Route(base, create_bot, methods=["POST"], body=BotIn, status_code=201, **common),
        Route(base, list_bots, response=list[BotOut], name="list_bots", **common),
        Route(one, get_bot, response=BotOut, **common),
        Route(one, delete_bot, methods=["DELETE"], status_code=204, name="delete_bot", **common),
        Route(one + "/start", start_bot, methods=["POST"], response=BotOut, **common),
        Route(one + "/stop", stop_bot, methods=["POST"], response=BotOut, **common),
        Route(one + "/pause", pause_bot, methods=["POST"], response=BotOut, **common),
        Route(one + "/orders", bot_orders, query=Paging, response=list[dict[str, Any]], **common),
        Route(one + "/fills", bot_fills, query=Paging, response=list[dict[str, Any]], **common),
        Route(one + "/decisions", bot_decisions, query=Paging, response=list[dict[str, Any]], **common),
        Route(one + "/pnl", bot_pnl, response=dict[str, Any], **common),
    ]
