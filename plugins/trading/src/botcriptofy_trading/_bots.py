"""Bots: a strategy with parameters trading one market on an exchange account within risk limits.

A running bot is a workflow (``trading.bot``) on the workflows plugin: it ticks, waits, ticks again.
Each tick decides on the newest candle once (a decision is unique per bot and candle time) and, with
the bot's row locked, reserves the order it wants before placing it, so two racing ticks can never
take the position past ``max_position``. The order's idempotency key is derived from the bot id, the
candle time and the side: a tick replayed after a worker died places nothing twice.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from botcriptofy import Kernel, Notification, ProblemError

from ._backtests import strategies, validate_parameters
from ._events import BotOrderFilled, BotStopped, DailyLossHit
from ._models import bot_fills, bot_orders, bots, decisions, saved_strategies, utcnow
from ._settings import TradingSettings

# numpy is imported inside the functions that use it: a worker serving no backtest or bot never loads it (~20 MB of RSS).

log = logging.getLogger("botcriptofy.trading")

WORKFLOW = "trading.bot"
TICK = "trading.bot-tick"
HANDOVER = "trading.bot-handover"
QUANTUM = Decimal("0.000000000001")
TIMEFRAMES = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800, "M": 31 * 86_400}


def dec(value: Any) -> Decimal:
    return Decimal(str(value))


def text(value: Decimal) -> str:
    """A decimal as stored: 12 places at most, no exponent, no trailing zeros."""
    with localcontext() as exact:
        exact.prec = 80
        quantised = value.quantize(QUANTUM, rounding=ROUND_DOWN).normalize()
    return format(quantised, "f")


def timeframe_seconds(timeframe: str) -> int:
    """``1m`` → 60, ``4h`` → 14 400, ``1M`` → 31 days; ValueError for anything else."""
    unit, count = timeframe[-1:], timeframe[:-1]
    if unit not in TIMEFRAMES or not count.isdigit() or int(count) < 1:
        raise ValueError(f"unknown timeframe '{timeframe}'")
    return int(count) * TIMEFRAMES[unit]


def _field(detail: str, field: str, message: str, title: str = "Validation failed", status: int = 422) -> ProblemError:
    return ProblemError(status, title, detail, errors=[{"field": field, "message": message, "in": "body"}])


def not_found(what: str = "bot") -> ProblemError:
    return ProblemError(404, "Not found", f"No such {what} for this tenant.")


def settings_of(kernel: Kernel) -> TradingSettings:
    return kernel.settings_for("trading") or TradingSettings()


async def _call(kernel: Kernel, hook: str, **kwargs: Any) -> Any:
    found = getattr(kernel.hook, hook)(kernel=kernel, **kwargs)
    return await found if inspect.isawaitable(found) else found


# -- saved strategies (the plan's `strategies` quota) ------------------------------------------------


async def save_strategy(kernel: Kernel, tenant_id: str, name: str, strategy: str, parameters: dict[str, Any]) -> dict[str, Any]:
    cls = await _strategy_class(kernel, strategy)
    checked = validate_parameters(cls, parameters).model_dump()
    await kernel.consume_quota(tenant_id, "strategies", 1)
    row = {
        "id": str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "name": name,
        "strategy": strategy,
        "parameters": checked,
        "created_at": utcnow(),
    }
    try:
        async with kernel.database().session(tenant_id=tenant_id) as session:
            await session.execute(sa.insert(saved_strategies).values(**row))
    except BaseException:
        await kernel.consume_quota(tenant_id, "strategies", -1)
        raise
    return {key: row[key] for key in ("id", "name", "strategy", "parameters", "created_at")}


async def list_saved(kernel: Kernel, tenant_id: str) -> list[dict[str, Any]]:
    async with kernel.database().session(tenant_id=tenant_id) as session:
        rows = (
            await session.execute(
                sa.select(saved_strategies).where(saved_strategies.c.tenant_id == tenant_id).order_by(saved_strategies.c.created_at)
            )
        ).all()
    return [{"id": r.id, "name": r.name, "strategy": r.strategy, "parameters": r.parameters, "created_at": r.created_at} for r in rows]


async def delete_saved(kernel: Kernel, tenant_id: str, strategy_id: str) -> None:
    async with kernel.database().session(tenant_id=tenant_id) as session:
        result = await session.execute(
            sa.delete(saved_strategies).where(saved_strategies.c.tenant_id == tenant_id, saved_strategies.c.id == strategy_id)
        )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise not_found("saved strategy")
    await kernel.consume_quota(tenant_id, "strategies", -1)


async def _strategy_class(kernel: Kernel, name: str, field: str = "strategy") -> Any:
    known = await strategies(kernel)
    cls = known.get(name)
    if cls is None:
        raise _field(f"No strategy '{name}'; known: {', '.join(sorted(known))}.", field, "unknown strategy", "Unknown strategy")
    return cls


# -- bots ----------------------------------------------------------------------------------------------


def view(row: Any) -> dict[str, Any]:
    values = row if isinstance(row, dict) else row._asdict()
    keys = (
        "id",
        "name",
        "strategy",
        "parameters",
        "account_id",
        "source",
        "symbol",
        "timeframe",
        "status",
        "stop_reason",
        "last_candle_at",
        "created_at",
        "updated_at",
    )
    out = {key: values[key] for key in keys}
    out["order_amount"] = values["order_amount"]
    out["risk"] = {
        "max_position": values["max_position"],
        "max_daily_loss": values["max_daily_loss"],
        "stop_loss_percent": values["stop_loss_percent"],
    }
    return out


async def create_bot(kernel: Kernel, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Validate a bot (strategy and parameters, account, market, risk limits), count it against the plan, store it."""
    if body.get("strategy_id"):
        async with kernel.database().session(tenant_id=tenant_id) as session:
            saved = (
                await session.execute(
                    sa.select(saved_strategies).where(
                        saved_strategies.c.tenant_id == tenant_id, saved_strategies.c.id == body["strategy_id"]
                    )
                )
            ).first()
        if saved is None:
            raise _field("No saved strategy with this id for this tenant.", "strategy_id", "unknown saved strategy")
        strategy, parameters = saved.strategy, saved.parameters
    elif body.get("strategy"):
        strategy, parameters = body["strategy"], body.get("parameters") or {}
    else:
        raise _field("Give a strategy (with parameters) or a saved strategy_id.", "strategy", "required")
    cls = await _strategy_class(kernel, strategy)
    checked = validate_parameters(cls, parameters).model_dump()
    account = await _call(kernel, "trading_account", tenant_id=tenant_id, account_id=body["account_id"])
    if account is None:
        raise _field("No exchange account with this id for this tenant.", "account_id", "unknown exchange account")
    if dec(body["order_amount"]) > dec(body["max_position"]):
        raise _field("order_amount cannot exceed max_position.", "order_amount", "larger than max_position")
    await kernel.consume_quota(tenant_id, "bots", 1)
    now = utcnow()
    row = {
        "id": str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "name": body["name"],
        "strategy": strategy,
        "parameters": checked,
        "account_id": account["id"],
        "source": account.get("price_source") or account["exchange"],
        "symbol": body["symbol"],
        "timeframe": body["timeframe"],
        "order_amount": text(dec(body["order_amount"])),
        "max_position": text(dec(body["max_position"])),
        "max_daily_loss": text(dec(body["max_daily_loss"])) if body.get("max_daily_loss") is not None else None,
        "stop_loss_percent": text(dec(body["stop_loss_percent"])) if body.get("stop_loss_percent") is not None else None,
        "status": "created",
        "stop_reason": None,
        "run": 0,
        "workflow_id": None,
        "last_candle_at": None,
        "created_at": now,
        "updated_at": now,
    }
    try:
        async with kernel.database().session(tenant_id=tenant_id) as session:
            await session.execute(sa.insert(bots).values(**row))
    except BaseException:
        await kernel.consume_quota(tenant_id, "bots", -1)
        raise
    log.info("bot created", extra={"tenant_id": tenant_id, "bot_id": row["id"]})
    return view(row)


async def get_row(kernel: Kernel, tenant_id: str, bot_id: str) -> Any:
    async with kernel.database().session(tenant_id=tenant_id) as session:
        row = (await session.execute(sa.select(bots).where(bots.c.tenant_id == tenant_id, bots.c.id == bot_id))).first()
    if row is None:
        raise not_found()
    return row


async def list_bots(kernel: Kernel, tenant_id: str) -> list[dict[str, Any]]:
    async with kernel.database().session(tenant_id=tenant_id) as session:
        rows = (await session.execute(sa.select(bots).where(bots.c.tenant_id == tenant_id).order_by(bots.c.created_at))).all()
    return [view(row) for row in rows]


async def start_bot(kernel: Kernel, tenant_id: str, bot_id: str) -> dict[str, Any]:
    """Run the bot as a workflow; starting a running bot answers with it (one runner per bot)."""
    engine = kernel.workflows()  # 503 naming the plugin to enable, before anything changes
    settings = settings_of(kernel)
    async with kernel.database().session(tenant_id=tenant_id, write_lock=True) as session:
        row = (await session.execute(sa.select(bots).where(bots.c.tenant_id == tenant_id, bots.c.id == bot_id).with_for_update())).first()
        if row is None:
            raise not_found()
        if row.status == "running":
            return view(row)
        run = row.run + 1
        workflow_id = f"{WORKFLOW}.{bot_id}.{run}.0"
        values = {"status": "running", "stop_reason": None, "run": run, "workflow_id": workflow_id, "updated_at": utcnow()}
        await session.execute(sa.update(bots).where(bots.c.tenant_id == tenant_id, bots.c.id == bot_id).values(**values))
    await engine.start(WORKFLOW, id=workflow_id, input=_input(tenant_id, bot_id, run, 0, settings))
    log.info("bot started", extra={"tenant_id": tenant_id, "bot_id": bot_id, "workflow_id": workflow_id})
    return view({**row._asdict(), **values})


def _input(tenant_id: str, bot_id: str, run: int, segment: int, settings: TradingSettings) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "bot_id": bot_id, "run": run, "segment": segment, "ticks": settings.bot_segment_ticks}


async def halt_bot(kernel: Kernel, tenant_id: str, bot_id: str, status: str, reason: str = "user") -> dict[str, Any]:
    """Stop or pause a bot: its runner sees it at its next tick (woken now) and ends; an order in flight completes."""
    async with kernel.database().session(tenant_id=tenant_id, write_lock=True) as session:
        row = (await session.execute(sa.select(bots).where(bots.c.tenant_id == tenant_id, bots.c.id == bot_id).with_for_update())).first()
        if row is None:
            raise not_found()
        if status == "paused" and row.status != "running":
            raise ProblemError(409, "Bot not running", f"The bot is {row.status}; only a running bot can be paused.")
        if row.status == status:
            return view(row)
        values = {"status": status, "stop_reason": reason if status == "stopped" else None, "updated_at": utcnow()}
        await session.execute(sa.update(bots).where(bots.c.tenant_id == tenant_id, bots.c.id == bot_id).values(**values))
        if status == "stopped":
            await kernel.events.publish(
                BotStopped(tenant_id=tenant_id, bot_id=bot_id, reason=reason, detail=f"stopped by {reason}"),
                session=session,
                tenant_id=tenant_id,
            )
    if row.workflow_id and kernel.has_workflow_engine():
        await kernel.workflows().signal(row.workflow_id, "wake", {})
    return view({**row._asdict(), **values})


async def delete_bot(kernel: Kernel, tenant_id: str, bot_id: str) -> None:
    """Delete a bot that is not running (its decisions, orders and fills go too); frees its plan slot."""
    async with kernel.database().session(tenant_id=tenant_id, write_lock=True) as session:
        row = (await session.execute(sa.select(bots).where(bots.c.tenant_id == tenant_id, bots.c.id == bot_id).with_for_update())).first()
        if row is None:
            raise not_found()
        if row.status == "running":
            raise ProblemError(409, "Bot running", "Stop the bot before deleting it.")
        for table in (bot_fills, bot_orders, decisions):
            await session.execute(sa.delete(table).where(table.c.tenant_id == tenant_id, table.c.bot_id == bot_id))
        await session.execute(sa.delete(bots).where(bots.c.tenant_id == tenant_id, bots.c.id == bot_id))
    await kernel.consume_quota(tenant_id, "bots", -1)


# -- the tick ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Book:
    """What a bot holds, from its fills (average cost) and the orders it reserved but has not settled."""

    position: Decimal
    average_entry: Decimal
    realised: Decimal
    fees: Decimal
    day_realised: Decimal
    day_fees: Decimal
    pending_buy: Decimal
    pending_sell: Decimal

    def unrealised(self, price: Decimal) -> Decimal:
        return self.position * (price - self.average_entry) if self.position else Decimal(0)

    def day_pnl(self, price: Decimal) -> Decimal:
        """Today's (UTC) realised profit less today's fees, plus the open position marked at ``price``."""
        return self.day_realised - self.day_fees + self.unrealised(price)


async def book_of(session: Any, tenant_id: str, bot_id: str, now: datetime | None = None) -> Book:
    day = (now or utcnow()).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    found = (
        await session.execute(
            sa.select(bot_fills).where(bot_fills.c.tenant_id == tenant_id, bot_fills.c.bot_id == bot_id).order_by(bot_fills.c.filled_at)
        )
    ).all()
    position = average = realised = fees = day_realised = day_fees = Decimal(0)
    for fill in found:
        amount, price, fee, gained = dec(fill.amount), dec(fill.price), dec(fill.fee), dec(fill.realised)
        if fill.side == "buy":
            average = (average * position + price * amount) / (position + amount)
            position += amount
        else:
            position -= amount
            if position <= 0:
                position, average = Decimal(0), Decimal(0)
        realised += gained
        fees += fee
        if fill.filled_at >= day:
            day_realised += gained
            day_fees += fee
    pending = (
        await session.execute(
            sa.select(bot_orders.c.side, bot_orders.c.amount).where(
                bot_orders.c.tenant_id == tenant_id, bot_orders.c.bot_id == bot_id, bot_orders.c.status.in_(("pending", "open"))
            )
        )
    ).all()
    buys = sum((dec(p.amount) for p in pending if p.side == "buy"), Decimal(0))
    sells = sum((dec(p.amount) for p in pending if p.side == "sell"), Decimal(0))
    return Book(position, average, realised, fees, day_realised, day_fees, buys, sells)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def order_key(bot_id: str, candle_time: datetime, side: str) -> str:
    """The exchange order's idempotency key: one order per bot, candle and side, however often the tick runs."""
    return f"bot:{bot_id}:{_iso(candle_time)}:{side}"


async def tick(kernel: Kernel, tenant_id: str, bot_id: str, *, run: int | None = None, upto: datetime | None = None) -> dict[str, Any]:
    """One step of a running bot: settle orders left in flight, decide on the newest candle once, place and settle its order.

    ``upto`` decides on the newest candle at or before that time (for tests and replays); ``run``
    makes a runner of an older start exit. Returns ``{"state", "action", "wait"}``.
    """
    import numpy as np
    settings = settings_of(kernel)
    row = await get_row(kernel, tenant_id, bot_id)
    if row.status != "running" or (run is not None and row.run != run):
        return {"state": row.status if row.status != "running" else "superseded", "action": None, "wait": 0}
    for pending in await _pending(kernel, tenant_id, bot_id):  # a tick cut short before its order settled
        await _settle(kernel, row, pending)
    step = timeframe_seconds(row.timeframe)
    end = upto or utcnow()
    loaded = await _call(
        kernel,
        "load_candles",
        exchange=row.source,
        symbol=row.symbol,
        timeframe=row.timeframe,
        start=end - timedelta(seconds=step * settings.bot_lookback_bars),
        end=end,
    )
    if not loaded:
        return {"state": "running", "action": None, "wait": settings.bot_poll_seconds}
    cls = (await strategies(kernel)).get(row.strategy)
    if cls is None:
        raise ProblemError(409, "Strategy gone", f"The strategy '{row.strategy}' is no longer installed.")
    close = np.array([float(c["close"]) for c in loaded])
    signal = int(cls.signals(close, cls.Parameters.model_validate(row.parameters))[-1])
    newest = loaded[-1]
    outcome = await _decide(kernel, tenant_id, bot_id, newest["time"], dec(newest["close"]), signal)
    if outcome is None:  # this candle was decided already
        return {"state": "running", "action": None, "wait": settings.bot_poll_seconds}
    state, action, order = outcome
    if order is not None:
        await _settle(kernel, await get_row(kernel, tenant_id, bot_id), order)
    return {"state": state, "action": action, "wait": settings.bot_poll_seconds}


async def _pending(kernel: Kernel, tenant_id: str, bot_id: str) -> list[Any]:
    async with kernel.database().session(tenant_id=tenant_id) as session:
        query = sa.select(bot_orders).where(
            bot_orders.c.tenant_id == tenant_id, bot_orders.c.bot_id == bot_id, bot_orders.c.status == "pending"
        )
        return list((await session.execute(query.order_by(bot_orders.c.created_at))).all())


async def _decide(
    kernel: Kernel, tenant_id: str, bot_id: str, candle_time: datetime, close: Decimal, signal: int
) -> tuple[str, str, Any] | None:
    """With the bot's row locked: apply the risk limits, record the decision and reserve its order (None: decided already)."""
    try:
        async with kernel.database().session(tenant_id=tenant_id, write_lock=True) as session:
            bot = (await session.execute(sa.select(bots).where(bots.c.tenant_id == tenant_id, bots.c.id == bot_id).with_for_update())).one()
            if bot.status != "running":
                return bot.status, "none", None
            seen = await session.execute(
                sa.select(decisions.c.id).where(
                    decisions.c.tenant_id == tenant_id, decisions.c.bot_id == bot_id, decisions.c.candle_time == candle_time
                )
            )
            if seen.first() is not None:
                return None
            book = await book_of(session, tenant_id, bot_id)
            held = book.position - book.pending_sell  # what a sell may still sell
            side: str | None = None
            amount = Decimal(0)
            stop: str | None = None
            detail = ""
            day_loss = -book.day_pnl(close)
            stop_loss = dec(bot.stop_loss_percent) if bot.stop_loss_percent is not None else None
            max_loss = dec(bot.max_daily_loss) if bot.max_daily_loss is not None else None
            if stop_loss is not None and book.position > 0 and close <= book.average_entry * (1 - stop_loss / 100):
                action, stop = "stop_loss", "stop_loss"
                detail = f"close {text(close)} is {text(stop_loss)} % or more below the entry {text(book.average_entry)}"
                side, amount = "sell", held
            elif max_loss is not None and day_loss >= max_loss:
                action, stop = "daily_loss", "max_daily_loss"
                detail = f"today's loss {text(day_loss)} reached the limit {text(max_loss)}"
                side, amount = "sell", held
            elif signal > 0:
                room = dec(bot.max_position) - book.position - book.pending_buy
                amount = min(dec(bot.order_amount), room)
                if amount <= 0:
                    action, detail = "refused", f"max_position {bot.max_position} reached"
                else:
                    action, side = "buy", "buy"
                    if amount < dec(bot.order_amount):
                        detail = f"capped to {text(amount)} by max_position {bot.max_position}"
            elif signal < 0 and held > 0:
                action, side, amount = "sell", "sell", held
            else:
                action = "hold"
            now = utcnow()
            decision_id = str(uuid.uuid4())
            await session.execute(
                sa.insert(decisions).values(
                    id=decision_id,
                    tenant_id=tenant_id,
                    bot_id=bot_id,
                    candle_time=candle_time,
                    close=text(close),
                    signal=signal,
                    action=action,
                    detail=detail or None,
                    created_at=now,
                )
            )
            order = None
            if side is not None and amount > 0:
                order = {
                    "id": str(uuid.uuid4()),
                    "tenant_id": tenant_id,
                    "bot_id": bot_id,
                    "decision_id": decision_id,
                    "key": order_key(bot_id, candle_time, side),
                    "side": side,
                    "amount": text(amount),
                    "status": "pending",
                    "exchange_order_id": None,
                    "price": None,
                    "fee": None,
                    "error": None,
                    "created_at": now,
                    "closed_at": None,
                }
                await session.execute(sa.insert(bot_orders).values(**order))
            values: dict[str, Any] = {"last_candle_at": max(candle_time, bot.last_candle_at or candle_time), "updated_at": now}
            state = "running"
            if stop is not None:
                values.update(status="stopped", stop_reason=stop)
                state = "stopped"
                await _stopped(kernel, session, bot, stop, detail, day_loss if stop == "max_daily_loss" else None)
            await session.execute(sa.update(bots).where(bots.c.tenant_id == tenant_id, bots.c.id == bot_id).values(**values))
    except IntegrityError:  # another tick decided this candle at the same moment (SQLite's check-then-insert race)
        return None
    log.info("bot decided", extra={"tenant_id": tenant_id, "bot_id": bot_id, "action": action, "signal": signal})
    return state, action, _Row(order) if order is not None else None


class _Row:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


async def _stopped(kernel: Kernel, session: Any, bot: Any, reason: str, detail: str, loss: Decimal | None) -> None:
    tenant_id = bot.tenant_id
    await kernel.events.publish(
        BotStopped(tenant_id=tenant_id, bot_id=bot.id, reason=reason, detail=detail),
        session=session,
        tenant_id=tenant_id,
        idempotency_key=f"bot-stopped:{bot.id}:{bot.run}",
    )
    if loss is not None:
        await kernel.events.publish(
            DailyLossHit(tenant_id=tenant_id, bot_id=bot.id, loss=text(loss), limit=bot.max_daily_loss),
            session=session,
            tenant_id=tenant_id,
            idempotency_key=f"daily-loss:{bot.id}:{bot.run}",
        )
    await kernel.notify(
        Notification(
            recipient=f"tenant:{tenant_id}",
            subject=f"Bot {bot.name} stopped: {reason.replace('_', ' ')}",
            body=f"Your bot {bot.name} ({bot.symbol}) was stopped by its {reason.replace('_', ' ')} limit: {detail}.",
            severity="warning",
            category="trading.bot_stopped",
            data={"bot_id": bot.id, "reason": reason},
            dedup_key=f"bot-stopped:{bot.id}:{bot.run}",
            tenant_id=tenant_id,
        ),
        session=session,
    )


async def _settle(kernel: Kernel, bot: Any, order: Any) -> None:
    """Place a reserved order (once per key) and record its fill; a refused order is kept as ``rejected``."""
    tenant_id = bot.tenant_id
    try:
        placed = await _call(
            kernel,
            "place_order",
            tenant_id=tenant_id,
            account_id=bot.account_id,
            key=order.key,
            symbol=bot.symbol,
            side=order.side,
            type="market",
            amount=order.amount,
            price=None,
        )
        if placed is None:
            raise ProblemError(503, "No exchange", "No plugin places orders: enable the exchanges plugin.")
    except ProblemError as problem:
        if problem.status >= 500:
            raise  # the outcome is unknown: the order stays pending and the next try places it under the same key
        async with kernel.database().session(tenant_id=tenant_id) as session:
            await session.execute(
                sa.update(bot_orders)
                .where(bot_orders.c.tenant_id == tenant_id, bot_orders.c.id == order.id, bot_orders.c.status == "pending")
                .values(status="rejected", error=f"{problem.title}: {problem.detail}", closed_at=utcnow())
            )
        log.warning("bot order refused", extra={"tenant_id": tenant_id, "bot_id": bot.id, "status": problem.status})
        return
    async with kernel.database().session(tenant_id=tenant_id, write_lock=True) as session:
        await session.execute(sa.select(bots.c.id).where(bots.c.tenant_id == tenant_id, bots.c.id == bot.id).with_for_update())
        current = (
            await session.execute(
                sa.select(bot_orders.c.status).where(bot_orders.c.tenant_id == tenant_id, bot_orders.c.id == order.id).with_for_update()
            )
        ).scalar_one()
        if current != "pending":
            return  # settled by another try meanwhile
        status = placed["status"] if placed["status"] in ("filled", "open") else "rejected"
        values = {
            "status": status,
            "exchange_order_id": placed["id"],
            "price": placed.get("average"),
            "fee": placed.get("fee"),
            "closed_at": utcnow() if status != "open" else None,
        }
        await session.execute(
            sa.update(bot_orders).where(bot_orders.c.tenant_id == tenant_id, bot_orders.c.id == order.id).values(**values)
        )
        if status == "filled":
            book = await book_of(session, tenant_id, bot.id)
            price, amount, fee = dec(placed["average"]), dec(placed["filled"]), dec(placed["fee"])
            realised = amount * (price - book.average_entry) if order.side == "sell" else Decimal(0)
            filled_at = utcnow()
            await session.execute(
                sa.insert(bot_fills).values(
                    id=str(uuid.uuid4()),
                    tenant_id=tenant_id,
                    bot_id=bot.id,
                    order_id=order.id,
                    side=order.side,
                    price=text(price),
                    amount=text(amount),
                    fee=text(fee),
                    realised=text(realised),
                    filled_at=filled_at,
                )
            )
            await kernel.events.publish(
                BotOrderFilled(
                    tenant_id=tenant_id,
                    bot_id=bot.id,
                    order_id=order.id,
                    symbol=bot.symbol,
                    side=order.side,
                    amount=text(amount),
                    price=text(price),
                    fee=text(fee),
                    reason=order.key,
                ),
                session=session,
                tenant_id=tenant_id,
                idempotency_key=f"bot-order-filled:{order.id}",
            )
            await kernel.notify(
                Notification(
                    recipient=f"tenant:{tenant_id}",
                    subject=f"Bot {bot.name}: {order.side} {text(amount)} {bot.symbol} at {text(price)}",
                    body=f"Your bot {bot.name} {'bought' if order.side == 'buy' else 'sold'} {text(amount)} {bot.symbol} "
                    f"at {text(price)} (fee {text(fee)}).",
                    category="trading.order_filled",
                    data={"bot_id": bot.id, "order_id": order.id},
                    dedup_key=f"bot-order-filled:{order.id}",
                    tenant_id=tenant_id,
                ),
                session=session,
            )


# -- reading ---------------------------------------------------------------------------------------------


async def orders_of(kernel: Kernel, tenant_id: str, bot_id: str, limit: int) -> list[dict[str, Any]]:
    await get_row(kernel, tenant_id, bot_id)
    async with kernel.database().session(tenant_id=tenant_id) as session:
        query = sa.select(bot_orders, decisions.c.candle_time, decisions.c.action).join(
            decisions, decisions.c.id == bot_orders.c.decision_id
        )
        query = query.where(bot_orders.c.tenant_id == tenant_id, bot_orders.c.bot_id == bot_id)
        rows = (await session.execute(query.order_by(bot_orders.c.created_at.desc()).limit(limit))).all()
    keys = (
        "id",
        "key",
        "side",
        "amount",
        "status",
        "exchange_order_id",
        "price",
        "fee",
        "error",
        "created_at",
        "closed_at",
        "candle_time",
        "action",
    )
    return [{key: getattr(row, key) for key in keys} for row in rows]


async def fills_of(kernel: Kernel, tenant_id: str, bot_id: str, limit: int) -> list[dict[str, Any]]:
    await get_row(kernel, tenant_id, bot_id)
    async with kernel.database().session(tenant_id=tenant_id) as session:
        query = sa.select(bot_fills).where(bot_fills.c.tenant_id == tenant_id, bot_fills.c.bot_id == bot_id)
        rows = (await session.execute(query.order_by(bot_fills.c.filled_at.desc()).limit(limit))).all()
    keys = ("id", "order_id", "side", "price", "amount", "fee", "realised", "filled_at")
    return [{key: getattr(row, key) for key in keys} for row in rows]


async def decisions_of(kernel: Kernel, tenant_id: str, bot_id: str, limit: int) -> list[dict[str, Any]]:
    await get_row(kernel, tenant_id, bot_id)
    async with kernel.database().session(tenant_id=tenant_id) as session:
        query = sa.select(decisions).where(decisions.c.tenant_id == tenant_id, decisions.c.bot_id == bot_id)
        rows = (await session.execute(query.order_by(decisions.c.candle_time.desc()).limit(limit))).all()
    keys = ("id", "candle_time", "close", "signal", "action", "detail", "created_at")
    return [{key: getattr(row, key) for key in keys} for row in rows]


async def pnl(kernel: Kernel, tenant_id: str, bot_id: str) -> dict[str, Any]:
    """Position, average entry, realised and unrealised profit, fees and today's P&L at the newest candle's close."""
    row = await get_row(kernel, tenant_id, bot_id)
    async with kernel.database().session(tenant_id=tenant_id) as session:
        book = await book_of(session, tenant_id, bot_id)
        last = (
            await session.execute(
                sa.select(decisions.c.close)
                .where(decisions.c.tenant_id == tenant_id, decisions.c.bot_id == bot_id)
                .order_by(decisions.c.candle_time.desc())
                .limit(1)
            )
        ).first()
    price = dec(last.close) if last is not None else book.average_entry
    unrealised = book.unrealised(price)
    return {
        "bot_id": bot_id,
        "symbol": row.symbol,
        "position": text(book.position),
        "average_entry": text(book.average_entry),
        "last_price": text(price),
        "realised": text(book.realised),
        "unrealised": text(unrealised),
        "fees": text(book.fees),
        "net": text(book.realised + unrealised - book.fees),
        "day_pnl": text(book.day_pnl(price)),
    }


# -- the workflow ----------------------------------------------------------------------------------------


async def run_workflow(context: Any, input: Any) -> dict[str, Any]:
    """Tick, wait (woken early by a stop or pause), tick again; after ``ticks`` ticks hand over to a fresh execution.

    Deterministic: everything that touches the world is an activity.
    """
    for _ in range(int(input["ticks"])):
        result = await context.activity(TICK, {key: input[key] for key in ("tenant_id", "bot_id", "run")})
        if result["state"] != "running":
            return dict(result)
        await context.wait_for_signal("wake", timeout=float(result["wait"]))
    return dict(await context.activity(HANDOVER, dict(input)))


async def handover(kernel: Kernel, input: Any) -> dict[str, Any]:
    """Start the bot's next execution (bounded histories) when it is still running under the same start."""
    tenant_id, bot_id, run, segment = input["tenant_id"], input["bot_id"], int(input["run"]), int(input["segment"]) + 1
    workflow_id = f"{WORKFLOW}.{bot_id}.{run}.{segment}"
    async with kernel.database().session(tenant_id=tenant_id, write_lock=True) as session:
        row = (await session.execute(sa.select(bots).where(bots.c.tenant_id == tenant_id, bots.c.id == bot_id).with_for_update())).first()
        if row is None or row.status != "running" or row.run != run:
            return {"state": row.status if row is not None else "deleted", "action": None, "wait": 0}
        await session.execute(sa.update(bots).where(bots.c.id == bot_id, bots.c.tenant_id == tenant_id).values(workflow_id=workflow_id))
    await kernel.workflows().start(WORKFLOW, id=workflow_id, input=_input(tenant_id, bot_id, run, segment, settings_of(kernel)))
    return {"state": "handed_over", "action": None, "wait": 0, "next": workflow_id}


# -- staff ------------------------------------------------------------------------------------------------


async def counts(kernel: Kernel, tenant_id: str | None = None) -> tuple[dict[str, int], list[Any]]:
    async with kernel.database().session(system=True) as session:
        query = sa.select(bots.c.status, sa.func.count()).group_by(bots.c.status)
        if tenant_id is not None:
            query = query.where(bots.c.tenant_id == tenant_id)
        by_status = {status: int(count) for status, count in (await session.execute(query)).all()}
        listed: list[Any] = []
        if tenant_id is not None:
            listed = list((await session.execute(sa.select(bots).where(bots.c.tenant_id == tenant_id).order_by(bots.c.created_at))).all())
    return by_status, listed


async def tenant_of(kernel: Kernel, bot_id: str) -> str | None:
    async with kernel.database().session(system=True) as session:
        return (await session.execute(sa.select(bots.c.tenant_id).where(bots.c.id == bot_id))).scalar_one_or_none()


# -- data subjects (LGPD) -------------------------------------------------------------------------------------


async def export_tenant(kernel: Kernel, tenant_id: str) -> dict[str, Any]:
    """A tenant's bots with their decisions, orders and fills, and its saved strategies (no exchange keys: bots hold none)."""
    async with kernel.database().session(tenant_id=tenant_id) as session:
        found = {}
        for name, table in (("decisions", decisions), ("orders", bot_orders), ("fills", bot_fills)):
            rows = (
                await session.execute(
                    sa.select(table)
                    .where(table.c.tenant_id == tenant_id)
                    .order_by(table.c.created_at if name != "fills" else table.c.filled_at)
                )
            ).all()
            found[name] = [{key: value for key, value in row._asdict().items() if key != "tenant_id"} for row in rows]
        listed = (await session.execute(sa.select(bots).where(bots.c.tenant_id == tenant_id).order_by(bots.c.created_at))).all()
    return {"bots": [view(row) for row in listed], **found, "saved_strategies": await list_saved(kernel, tenant_id)}


async def erase_tenant(kernel: Kernel, tenant_id: str) -> dict[str, Any]:
    """Stop and delete every bot of the tenant (decisions, orders and fills go with them) and its saved strategies."""
    async with kernel.database().session(tenant_id=tenant_id) as session:
        found = (await session.execute(sa.select(bots.c.id, bots.c.status).where(bots.c.tenant_id == tenant_id))).all()
    for bot_id, status in found:
        if status == "running":  # its runner ends at its next tick
            await halt_bot(kernel, tenant_id, bot_id, "stopped", reason="erasure")
        await delete_bot(kernel, tenant_id, bot_id)
    saved = await list_saved(kernel, tenant_id)
    for strategy in saved:
        await delete_saved(kernel, tenant_id, strategy["id"])
    return {"erased": {"bots": len(found), "saved_strategies": len(saved)}}
