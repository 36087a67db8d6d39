"""Backtest jobs: stored per tenant, run in the background (the engine in a worker thread), resumed after a restart."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from botcriptofy import Kernel, ProblemError, StashKey

from . import _engine
from ._models import backtests, utcnow
from ._settings import TradingSettings
from ._strategy import BUILT_IN, Strategy, is_strategy

# numpy is imported inside the functions that use it: a worker serving no backtest or bot never loads it (~20 MB of RSS).

log = logging.getLogger("botcriptofy.trading")


@dataclass
class Runner:
    """Runs queued backtests of this process; ``stop`` waits for none (a cut run is queued again at the next start)."""

    kernel: Kernel
    settings: TradingSettings
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    semaphore: asyncio.Semaphore | None = None

    def submit(self, backtest_id: str, tenant_id: str) -> None:
        if self.semaphore is None:
            self.semaphore = asyncio.Semaphore(self.settings.backtest_concurrency)
        task = asyncio.get_running_loop().create_task(self._run(backtest_id, tenant_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, backtest_id: str, tenant_id: str) -> None:
        assert self.semaphore is not None
        async with self.semaphore:
            try:
                await execute(self.kernel.current(), backtest_id, tenant_id, self.settings)
            except Exception:
                log.exception("backtest %s failed", backtest_id, extra={"backtest_id": backtest_id})

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


RUNNER: StashKey[Runner] = StashKey("trading.runner")


async def strategies(kernel: Kernel) -> dict[str, type[Strategy]]:
    """Every strategy: the built-in ones and those plugins contribute (the first to declare a name keeps it)."""
    found: dict[str, type[Strategy]] = {cls.name: cls for cls in BUILT_IN}
    for plugin, contributed in (await kernel.broadcast("register_strategies", kernel=kernel)).items():
        for cls in contributed or ():
            if not is_strategy(cls) or cls.name in found:
                log.error(
                    "plugin '%s' contributes %r: not a Strategy subclass with a name and its own signals(), or a name "
                    "already taken; ignored",
                    plugin,
                    getattr(cls, "name", None) or cls,
                )
                continue
            found[cls.name] = cls
    return found


def validate_parameters(cls: type[Strategy], parameters: dict[str, Any]) -> Any:
    try:
        return cls.Parameters.model_validate(parameters)
    except ValidationError as error:
        details = error.errors(include_url=False, include_context=False, include_input=False)
        fields = [
            {"field": ".".join(["parameters", *(str(p) for p in item["loc"])]), "message": item["msg"], "in": "body"} for item in details
        ]
        raise ProblemError(
            422, "Validation failed", f"Invalid parameters for '{cls.name}': {', '.join(f['field'] for f in fields)}.", errors=fields
        ) from None


async def create(kernel: Kernel, tenant_id: str, request: dict[str, Any]) -> dict[str, Any]:
    known = await strategies(kernel)
    cls = known.get(request["strategy"])
    if cls is None:
        raise ProblemError(
            422,
            "Unknown strategy",
            f"No strategy '{request['strategy']}'; known: {', '.join(sorted(known))}.",
            errors=[{"field": "strategy", "message": "unknown strategy", "in": "body"}],
        )
    request["parameters"] = validate_parameters(cls, request.get("parameters") or {}).model_dump()
    row = {
        "id": str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "status": "queued",
        "request": request,
        "result": None,
        "error": None,
        "created_at": utcnow(),
        "finished_at": None,
    }
    async with kernel.database().session(tenant_id=tenant_id) as session:
        await session.execute(sa.insert(backtests).values(**row))
    kernel.stash[RUNNER].submit(row["id"], tenant_id)
    return view(row)


def view(row: Any) -> dict[str, Any]:
    values = row if isinstance(row, dict) else row._asdict()
    return {key: values[key] for key in ("id", "status", "request", "result", "error", "created_at", "finished_at")}


async def get(kernel: Kernel, tenant_id: str, backtest_id: str) -> dict[str, Any]:
    async with kernel.database().session(tenant_id=tenant_id) as session:
        row = (await session.execute(sa.select(backtests).where(backtests.c.tenant_id == tenant_id, backtests.c.id == backtest_id))).first()
    if row is None:
        raise ProblemError(404, "Not found", "No such backtest for this tenant.")
    return view(row)


async def resume(kernel: Kernel) -> int:
    """Queue again the backtests a stopped process left queued or running."""
    async with kernel.database().session(system=True) as session:
        rows = (
            await session.execute(sa.select(backtests.c.id, backtests.c.tenant_id).where(backtests.c.status.in_(("queued", "running"))))
        ).all()
    for row in rows:
        kernel.stash[RUNNER].submit(row.id, row.tenant_id)
    return len(rows)


async def _claim(kernel: Kernel, backtest_id: str, tenant_id: str) -> dict[str, Any] | None:
    async with kernel.database().session(tenant_id=tenant_id) as session:
        result = await session.execute(
            sa.update(backtests)
            .where(backtests.c.tenant_id == tenant_id, backtests.c.id == backtest_id, backtests.c.status.in_(("queued", "running")))
            .values(status="running")
            .returning(backtests.c.request)
        )
        found = result.first()
    return dict(found[0]) if found is not None else None


async def _finish(kernel: Kernel, backtest_id: str, tenant_id: str, **values: Any) -> None:
    async with kernel.database().session(tenant_id=tenant_id) as session:
        await session.execute(
            sa.update(backtests)
            .where(backtests.c.tenant_id == tenant_id, backtests.c.id == backtest_id)
            .values(finished_at=utcnow(), **values)
        )


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def execute(kernel: Kernel, backtest_id: str, tenant_id: str, settings: TradingSettings) -> None:
    request = await _claim(kernel, backtest_id, tenant_id)
    if request is None:
        return
    try:
        cls = (await strategies(kernel)).get(request["strategy"])
        if cls is None:
            raise ValueError(f"the strategy '{request['strategy']}' is no longer installed")
        parameters = cls.Parameters.model_validate(request["parameters"])
        rows = kernel.hook.load_candles(
            kernel=kernel,
            exchange=request["exchange"],
            symbol=request["symbol"],
            timeframe=request["timeframe"],
            start=_parse_time(request.get("start")),
            end=_parse_time(request.get("end")),
        )
        if inspect.isawaitable(rows):
            rows = await rows
        if rows is None:
            raise ValueError("no plugin serves candles (enable the exchanges plugin)")
        if len(rows) < 2:
            raise ValueError(
                f"only {len(rows)} candle(s) of {request['symbol']} {request['timeframe']} on '{request['exchange']}'; import some first"
            )
        if len(rows) > settings.max_backtest_candles:
            raise ValueError(f"{len(rows)} candles exceed trading.max_backtest_candles ({settings.max_backtest_candles})")
        result = await asyncio.to_thread(compute, cls, parameters, rows, request, settings.equity_points)
    except Exception as error:
        await _finish(kernel, backtest_id, tenant_id, status="failed", error=str(error))
        return
    await _finish(kernel, backtest_id, tenant_id, status="succeeded", result=result)


def compute(cls: type[Strategy], parameters: Any, rows: list[dict[str, Any]], request: dict[str, Any], points: int) -> dict[str, Any]:
    """Run the engine and shape a JSON result (times as ISO strings, the equity curve sampled to ``points``)."""
    import numpy as np
    started = time.perf_counter()
    series = _engine.Series.from_rows(rows)
    signals = cls.signals(series.close, parameters)
    outcome = _engine.run(
        series,
        signals,
        cash=request["cash"],
        fee_rate=request["fee_rate"],
        slippage_bps=request.get("slippage_bps", 0.0),
        whole_units=request.get("whole_units", False),
    )
    equity = outcome.pop("equity")
    picks = np.unique(np.linspace(0, len(equity) - 1, min(points, len(equity))).astype(int))
    elapsed = time.perf_counter() - started

    def iso(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value

    return {
        **{key: value for key, value in outcome.items() if key not in ("trades", "open_position")},
        "trades": [{key: iso(value) for key, value in trade.items()} for trade in outcome["trades"]],
        "open_position": {key: iso(value) for key, value in outcome["open_position"].items()} if outcome["open_position"] else None,
        "equity_curve": [{"time": series.time[i].isoformat(), "equity": float(equity[i])} for i in picks],
        "candles": len(rows),
        "seconds": elapsed,
        "candles_per_second": len(rows) / elapsed if elapsed > 0 else None,
    }
