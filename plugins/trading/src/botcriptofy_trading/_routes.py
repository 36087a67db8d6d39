"""HTTP: strategies with their parameter schemas, and backtests (``/v1/trading/backtests``, also ``/v1/backtests``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from botcriptofy import ProblemError, Route, kernel_of, require

from . import _backtests

TAGS = ("trading",)


def _reasonable(value: datetime) -> datetime:
    if not 1970 <= value.year <= 2200:
        raise ValueError("use a time between 1970 and 2200")
    return value


# A time with its offset (naive times are ambiguous), within a range every database and clock can hold.
Instant = Annotated[AwareDatetime, AfterValidator(_reasonable)]


class StrategyOut(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any] = Field(description="JSON schema of the strategy's parameters.")


class BacktestIn(BaseModel):
    strategy: str = Field(min_length=1, max_length=100)
    parameters: dict[str, Any] = Field(default_factory=dict)
    exchange: str = Field(min_length=2, max_length=40, description="The candles' source (an exchange id or an import name).")
    symbol: str = Field(min_length=1, max_length=40)
    timeframe: str = Field(min_length=2, max_length=8)
    start: Instant | None = None
    end: Instant | None = None
    cash: float = Field(10_000.0, gt=0, le=1e12)
    fee_rate: float = Field(0.001, ge=0, lt=0.1, description="Fee on entry and on exit, a fraction of the traded value.")
    slippage_bps: float = Field(0.0, ge=0, le=1000)
    whole_units: bool = Field(False, description="Buy whole units only (as backtesting.py does).")

    @model_validator(mode="after")
    def _window(self) -> BacktestIn:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError("start must be before end")
        return self


class BacktestOut(BaseModel):
    id: str
    status: str
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


async def _tenant(request: Request) -> str:
    actor = await require(request)
    if actor.tenant_id is None:
        raise ProblemError(403, "Forbidden", "Backtests belong to a tenant; this caller has none.")
    return actor.tenant_id


async def list_strategies(request: Request) -> list[StrategyOut]:
    """Strategies available for backtests, each with the JSON schema of its parameters."""
    await require(request)
    found = await _backtests.strategies(kernel_of(request))
    return [StrategyOut(name=cls.name, description=cls.description, parameters=cls.schema()) for cls in found.values()]


async def create_backtest(request: Request, body: BacktestIn) -> Response:
    """Queue a backtest of a strategy over stored candles; poll its status and results."""
    tenant = await _tenant(request)
    payload = body.model_dump(mode="json")
    created = await _backtests.create(kernel_of(request), tenant, payload)
    return Response(
        BacktestOut(**created).model_dump_json(),
        202,
        media_type="application/json",
        headers={"Location": f"/v1/trading/backtests/{created['id']}"},
    )


async def get_backtest(request: Request) -> dict[str, Any]:
    """A backtest's status and, once it succeeded, its results (trades, equity curve, return, drawdown, Sharpe, win rate, fees)."""
    return await _backtests.get(kernel_of(request), await _tenant(request), request.path_params["backtest_id"])


def routes() -> list[BaseRoute]:
    out: list[BaseRoute] = [Route("/v1/trading/strategies", list_strategies, response=list[StrategyOut], authenticated=True, tags=TAGS)]
    for base, name in (("/v1/trading/backtests", "trading"), ("/v1/backtests", "short")):
        out.append(
            Route(
                base,
                create_backtest,
                methods=["POST"],
                body=BacktestIn,
                status_code=202,
                authenticated=True,
                tags=TAGS,
                name=f"create_backtest_{name}",
                responses={422: "Unknown strategy or invalid parameters"},
            )
        )
        out.append(
            Route(f"{base}/{{backtest_id}}", get_backtest, response=BacktestOut, authenticated=True, tags=TAGS, name=f"get_backtest_{name}")
        )
    return out
