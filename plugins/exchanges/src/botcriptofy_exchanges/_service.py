"""Exchange accounts and orders: linking (keys sealed), the paper exchange's fills and balances, live orders through ccxt."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from botcriptofy import Kernel, ProblemError

from . import _candles
from ._ccxt import call, check_permissions
from ._events import AccountLinked, AccountUnlinked, OrderFilled
from ._models import accounts, balances, fills, orders, utcnow
from ._state import state_of

log = logging.getLogger("botcriptofy.exchanges")

PAPER = "paper"
PROBLEMS = "https://botcriptofy.dev/problems/"
QUANTUM = Decimal("0.000000000001")


def dec(value: Any) -> Decimal:
    return Decimal(str(value))


def text(value: Decimal) -> str:
    """A decimal as stored: 12 places at most, no exponent, no trailing zeros."""
    with localcontext() as exact:
        exact.prec = 80  # amount x price of the largest accepted order still quantises to 12 places
        quantised = value.quantize(QUANTUM, rounding=ROUND_DOWN).normalize()
    return format(quantised, "f")


def hint(secret: str) -> str:
    return secret[-4:] if len(secret) >= 8 else ""


def context(account_id: str, column: str) -> str:
    return f"exchanges.exchanges_accounts.{column}:{account_id}"


def not_found(what: str) -> ProblemError:
    return ProblemError(404, "Not found", f"No such {what} for this tenant.")


def _field(status: int, title: str, detail: str, field: str, message: str, kind: str = "validation") -> ProblemError:
    return ProblemError(status, title, detail, type=PROBLEMS + kind, errors=[{"field": field, "message": message}])


# -- accounts ---------------------------------------------------------------------------------


def account_view(row: Any) -> dict[str, Any]:
    """An account as the API shows it: never the key or secret, only the key's last 4 characters."""
    return {
        "id": row.id,
        "exchange": row.exchange,
        "label": row.label,
        "paper": row.exchange == PAPER,
        "price_source": row.price_source,
        "api_key_hint": f"****{row.key_hint}" if row.key_hint else None,
        "permissions": row.permissions,
        "created_at": row.created_at,
    }


async def link_account(
    kernel: Kernel, tenant_id: str, *, exchange: str, label: str, api_key: str | None, api_secret: str | None, price_source: str | None
) -> dict[str, Any]:
    """Link an exchange account: check the key's permissions on the exchange, seal it, count it against the plan."""
    state = state_of(kernel)
    settings = state.settings
    account_id = str(uuid.uuid4())
    permissions: dict[str, bool] = {"read": True, "trade": True, "withdraw": False}
    sealed_key = sealed_secret = key_hint = None
    if exchange == PAPER:
        if api_key or api_secret:
            raise _field(
                422,
                "Paper accounts take no keys",
                "A paper account trades simulated balances: send no api_key or api_secret.",
                "api_key",
                "not allowed for paper accounts",
            )
        price_source = price_source or settings.paper_price_source
    else:
        if exchange not in settings.live_exchanges:
            raise _field(
                422,
                "Exchange not offered",
                f"'{exchange}' cannot be linked here; offered: {', '.join(['paper', *settings.live_exchanges])}.",
                "exchange",
                "not offered",
            )
        if not api_key or not api_secret:
            missing = "api_key" if not api_key else "api_secret"
            raise _field(422, "Credentials required", f"Linking {exchange} needs an API key and its secret.", missing, "required")
        if price_source is not None:
            raise _field(
                422, "No price source for live accounts", "A live account is priced by its exchange.", "price_source", "paper accounts only"
            )
        box = kernel.secret_box()  # 503 naming the plugin to enable, before anything is sent anywhere
        client = await state.clients.private(exchange, f"link:{account_id}", api_key, api_secret)
        try:
            permissions = await check_permissions(client)
        finally:
            await state.clients.forget(exchange, f"link:{account_id}")
        sealed_key = box.seal(api_key, context=context(account_id, "api_key"))
        sealed_secret = box.seal(api_secret, context=context(account_id, "api_secret"))
        key_hint = hint(api_key)
    await kernel.consume_quota(tenant_id, "exchanges", 1)
    row = {
        "id": account_id,
        "tenant_id": tenant_id,
        "exchange": exchange,
        "label": label,
        "price_source": price_source,
        "api_key": sealed_key,
        "api_secret": sealed_secret,
        "key_hint": key_hint,
        "permissions": permissions,
        "created_at": utcnow(),
    }
    try:
        async with kernel.database().session(tenant_id=tenant_id, write_lock=True) as session:
            await session.execute(sa.insert(accounts).values(**row))
            if exchange == PAPER:
                for asset, amount in settings.paper_starting_balances.items():
                    value = text(dec(amount))
                    await session.execute(
                        sa.insert(balances).values(
                            tenant_id=tenant_id, account_id=account_id, asset=asset, free=value, locked="0", deposited=value
                        )
                    )
            await kernel.events.publish(
                AccountLinked(tenant_id=tenant_id, account_id=account_id, exchange=exchange), session=session, tenant_id=tenant_id
            )
    except BaseException:
        await kernel.consume_quota(tenant_id, "exchanges", -1)
        raise
    log.info("exchange account linked", extra={"tenant_id": tenant_id, "account_id": account_id, "exchange": exchange})
    return account_view(_Row(row))


class _Row:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


async def list_accounts(kernel: Kernel, tenant_id: str) -> list[dict[str, Any]]:
    async with kernel.database().session(tenant_id=tenant_id) as session:
        rows = (await session.execute(sa.select(accounts).where(accounts.c.tenant_id == tenant_id).order_by(accounts.c.created_at))).all()
    return [account_view(row) for row in rows]


async def get_account(kernel: Kernel, tenant_id: str, account_id: str) -> Any:
    async with kernel.database().session(tenant_id=tenant_id) as session:
        row = (await session.execute(sa.select(accounts).where(accounts.c.tenant_id == tenant_id, accounts.c.id == account_id))).first()
    if row is None:
        raise not_found("exchange account")
    return row


async def unlink_account(kernel: Kernel, tenant_id: str, account_id: str) -> None:
    """Remove the account and its sealed keys; paper balances and order history of it go too."""
    async with kernel.database().session(tenant_id=tenant_id, write_lock=True) as session:
        row = (await session.execute(sa.select(accounts).where(accounts.c.tenant_id == tenant_id, accounts.c.id == account_id))).first()
        if row is None:
            raise not_found("exchange account")
        order_ids = sa.select(orders.c.id).where(orders.c.tenant_id == tenant_id, orders.c.account_id == account_id)
        await session.execute(sa.delete(fills).where(fills.c.tenant_id == tenant_id, fills.c.order_id.in_(order_ids)))
        await session.execute(sa.delete(orders).where(orders.c.tenant_id == tenant_id, orders.c.account_id == account_id))
        await session.execute(sa.delete(balances).where(balances.c.tenant_id == tenant_id, balances.c.account_id == account_id))
        await session.execute(sa.delete(accounts).where(accounts.c.tenant_id == tenant_id, accounts.c.id == account_id))
        await kernel.events.publish(
            AccountUnlinked(tenant_id=tenant_id, account_id=account_id, exchange=row.exchange), session=session, tenant_id=tenant_id
        )
    await state_of(kernel).clients.forget(row.exchange, account_id)
    await kernel.consume_quota(tenant_id, "exchanges", -1)


async def client_for(kernel: Kernel, row: Any) -> Any:
    """The account's ccxt client, its keys opened from the secret box."""
    box = kernel.secret_box()
    try:
        api_key = box.open(row.api_key, context=context(row.id, "api_key"))
        secret = box.open(row.api_secret, context=context(row.id, "api_secret"))
    except ValueError:
        raise ProblemError(
            409, "Keys cannot be opened", "This account's keys cannot be opened with the configured keys; link it again."
        ) from None
    return await state_of(kernel).clients.private(row.exchange, row.id, api_key, secret)


# -- orders -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderRequest:
    account_id: str
    symbol: str
    side: str
    type: str
    amount: Decimal
    price: Decimal | None


def order_view(row: Any, order_fills: list[Any] | None = None) -> dict[str, Any]:
    view = {
        "id": row.id,
        "account_id": row.account_id,
        "client_key": row.client_key,
        "exchange_order_id": row.exchange_order_id,
        "symbol": row.symbol,
        "side": row.side,
        "type": row.type,
        "amount": row.amount,
        "price": row.price,
        "status": row.status,
        "filled": row.filled,
        "average": row.average,
        "fee": row.fee,
        "fee_asset": row.fee_asset,
        "created_at": row.created_at,
        "closed_at": row.closed_at,
    }
    if order_fills is not None:
        view["fills"] = [{"price": f.price, "amount": f.amount, "fee": f.fee, "filled_at": f.filled_at} for f in order_fills]
    return view


async def place_order(kernel: Kernel, tenant_id: str, key: str, request: OrderRequest) -> tuple[dict[str, Any], bool]:
    """Place an order once per ``(account, key)``; return ``(order, created)`` (an existing order for a repeated key)."""
    async with kernel.database().session(tenant_id=tenant_id) as session:
        account = (
            await session.execute(sa.select(accounts).where(accounts.c.tenant_id == tenant_id, accounts.c.id == request.account_id))
        ).first()
        if account is None:
            raise not_found("exchange account")
        existing = await _order_by_key_in(session, tenant_id, account.id, key)
    if existing is not None:
        return existing, False
    await kernel.consume_quota(tenant_id, "orders_per_day", 1)
    try:
        if account.exchange == PAPER:
            return await _paper_order(kernel, tenant_id, account, key, request), True
        return await _live_order(kernel, tenant_id, account, key, request), True
    except IntegrityError:
        # The same key raced in from another request: that one placed the order; this one answers with it.
        await kernel.consume_quota(tenant_id, "orders_per_day", -1)
        found = await _order_by_key(kernel, tenant_id, account.id, key)
        if found is None:
            raise
        return found, False
    except ProblemError as problem:
        if problem.status < 500:  # refused before anything was placed: the order does not count
            await kernel.consume_quota(tenant_id, "orders_per_day", -1)
        raise


async def _order_by_key(kernel: Kernel, tenant_id: str, account_id: str, key: str) -> dict[str, Any] | None:
    async with kernel.database().session(tenant_id=tenant_id) as session:
        return await _order_by_key_in(session, tenant_id, account_id, key)


async def _order_by_key_in(session: Any, tenant_id: str, account_id: str, key: str) -> dict[str, Any] | None:
    query = sa.select(orders).where(orders.c.tenant_id == tenant_id, orders.c.account_id == account_id, orders.c.client_key == key)
    row = (await session.execute(query)).first()
    if row is None:
        return None
    found = (await session.execute(sa.select(fills).where(fills.c.tenant_id == tenant_id, fills.c.order_id == row.id))).all()
    return order_view(row, list(found))


def split_symbol(symbol: str) -> tuple[str, str]:
    base, _, quote = symbol.partition("/")
    return base, quote


async def _price(kernel: Kernel, account: Any, symbol: str, session: Any = None) -> Decimal:
    state = state_of(kernel)
    source = account.price_source or state.settings.paper_price_source
    if state.settings.paper_live_prices:
        client = await state.clients.public(source)
        ticker = await call(client, "fetch_ticker", symbol)
        if ticker.get("last") is None:
            raise _field(422, "No price", f"{source} has no last price for {symbol}.", "symbol", "no price")
        return dec(ticker["last"])
    found = await _candles.last_price(kernel, source, symbol, session=session)
    if found is None:
        raise _field(
            422,
            "No price",
            f"No candles of {symbol} on '{source}' price paper orders yet; import or fetch some first.",
            "symbol",
            "no recorded price",
        )
    return dec(found[0])


async def _balances_for_update(session: Any, tenant_id: str, account_id: str, assets: tuple[str, ...]) -> dict[str, Any]:
    """Lock the account, then read its balances: every change to one account's balances runs one at a time.

    Locking the account row (not only the balance rows) matters on PostgreSQL: a balance row another
    transaction is inserting cannot be locked, and the read after the lock sees it once that one commits.
    SQLite's ``BEGIN IMMEDIATE`` (``write_lock``) already serialises writers.
    """
    await session.execute(sa.select(accounts.c.id).where(accounts.c.tenant_id == tenant_id, accounts.c.id == account_id).with_for_update())
    query = (
        sa.select(balances)
        .where(balances.c.tenant_id == tenant_id, balances.c.account_id == account_id, balances.c.asset.in_(assets))
        .with_for_update()
    )
    return {row.asset: row for row in (await session.execute(query)).all()}


async def _adjust(
    session: Any,
    tenant_id: str,
    account_id: str,
    found: dict[str, Any],
    asset: str,
    *,
    free: Decimal = Decimal(0),
    locked: Decimal = Decimal(0),
) -> None:
    row = found.get(asset)
    if row is None:
        await session.execute(
            sa.insert(balances).values(
                tenant_id=tenant_id, account_id=account_id, asset=asset, free=text(free), locked=text(locked), deposited="0"
            )
        )
        return
    await session.execute(
        sa.update(balances)
        .where(balances.c.account_id == account_id, balances.c.asset == asset, balances.c.tenant_id == tenant_id)
        .values(free=text(dec(row.free) + free), locked=text(dec(row.locked) + locked))
    )


def _check_funds(found: dict[str, Any], asset: str, needed: Decimal) -> None:
    available = dec(found[asset].free) if asset in found else Decimal(0)
    if available < needed:
        raise _field(
            422,
            "Insufficient funds",
            f"The order needs {text(needed)} {asset}; the account has {text(available)} {asset} free.",
            "amount",
            f"needs {text(needed)} {asset}",
            "insufficient-funds",
        )


async def _paper_order(kernel: Kernel, tenant_id: str, account: Any, key: str, request: OrderRequest) -> dict[str, Any]:
    settings = state_of(kernel).settings
    base, quote = split_symbol(request.symbol)
    fee_rate = dec(settings.paper_fee_rate)
    slip = dec(settings.paper_slippage_bps) / Decimal(10_000)
    # A live price is fetched before the transaction: no lock is held across a network call.
    live = await _price(kernel, account, request.symbol) if settings.paper_live_prices else None
    async with kernel.database().session(tenant_id=tenant_id, write_lock=True) as session:
        found = await _balances_for_update(session, tenant_id, account.id, (base, quote))
        price = live if live is not None else await _price(kernel, account, request.symbol, session)
        buy = request.side == "buy"
        now = utcnow()
        if request.type == "market":
            execute = price * (1 + slip) if buy else price * (1 - slip)
        elif buy and price <= request.price:  # type: ignore[operator]
            execute = min(price * (1 + slip), request.price)  # type: ignore[type-var]
        elif not buy and price >= request.price:  # type: ignore[operator]
            execute = max(price * (1 - slip), request.price)  # type: ignore[type-var]
        else:
            execute = None  # rests on the book until recorded prices reach it
        order_id = str(uuid.uuid4())
        row: dict[str, Any] = {
            "id": order_id,
            "tenant_id": tenant_id,
            "account_id": account.id,
            "client_key": key,
            "exchange_order_id": None,
            "symbol": request.symbol,
            "side": request.side,
            "type": request.type,
            "amount": text(request.amount),
            "price": text(request.price) if request.price is not None else None,
            "status": "open",
            "filled": "0",
            "average": None,
            "fee": "0",
            "fee_asset": quote,
            "reserved": "0",
            "created_at": now,
            "closed_at": None,
        }
        if execute is not None:
            cost = request.amount * execute
            fee = cost * fee_rate
            if buy:
                _check_funds(found, quote, cost + fee)
                await _adjust(session, tenant_id, account.id, found, quote, free=-(cost + fee))
                await _adjust(session, tenant_id, account.id, found, base, free=request.amount)
            else:
                _check_funds(found, base, request.amount)
                await _adjust(session, tenant_id, account.id, found, base, free=-request.amount)
                await _adjust(session, tenant_id, account.id, found, quote, free=cost - fee)
            row.update(status="filled", filled=row["amount"], average=text(execute), fee=text(fee), closed_at=now)
            await session.execute(sa.insert(orders).values(**row))
            await _record_fill(kernel, session, tenant_id, account.id, row, execute, request.amount, fee, now)
        else:
            assert request.price is not None
            reserve_asset, reserve = (quote, request.amount * request.price * (1 + fee_rate)) if buy else (base, request.amount)
            _check_funds(found, reserve_asset, reserve)
            await _adjust(session, tenant_id, account.id, found, reserve_asset, free=-reserve, locked=reserve)
            row["reserved"] = text(reserve)
            await session.execute(sa.insert(orders).values(**row))
    fills_of = [_Row({"price": text(execute), "amount": row["amount"], "fee": row["fee"], "filled_at": now})] if execute is not None else []
    return order_view(_Row(row), fills_of)


async def _record_fill(
    kernel: Kernel,
    session: Any,
    tenant_id: str,
    account_id: str,
    row: dict[str, Any],
    price: Decimal,
    amount: Decimal,
    fee: Decimal,
    when: datetime,
) -> None:
    await session.execute(
        sa.insert(fills).values(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            order_id=row["id"],
            price=text(price),
            amount=text(amount),
            fee=text(fee),
            filled_at=when,
        )
    )
    await kernel.events.publish(
        OrderFilled(
            tenant_id=tenant_id,
            account_id=account_id,
            order_id=row["id"],
            symbol=row["symbol"],
            side=row["side"],
            amount=text(amount),
            price=text(price),
            fee=text(fee),
            paper=True,
        ),
        session=session,
        tenant_id=tenant_id,
        idempotency_key=f"order-filled:{row['id']}",
    )


async def sweep(kernel: Kernel, tenant_id: str, account: Any) -> int:
    """Fill the account's resting paper limit orders that recorded prices reached since they were placed; return how many."""
    if account.exchange != PAPER:
        return 0
    source = account.price_source or state_of(kernel).settings.paper_price_source
    async with kernel.database().session(tenant_id=tenant_id) as session:
        resting = (
            await session.execute(
                sa.select(orders).where(orders.c.tenant_id == tenant_id, orders.c.account_id == account.id, orders.c.status == "open")
            )
        ).all()
    filled = 0
    for order in resting:
        extremes = await _candles.extremes_since(kernel, source, order.symbol, order.created_at)
        if extremes is None:
            continue
        low, high = extremes
        limit = dec(order.price)
        if (order.side == "buy" and dec(low) <= limit) or (order.side == "sell" and dec(high) >= limit):
            filled += await _fill_resting(kernel, tenant_id, account, order.id)
    return filled


async def _fill_resting(kernel: Kernel, tenant_id: str, account: Any, order_id: str) -> int:
    fee_rate = dec(state_of(kernel).settings.paper_fee_rate)
    now = utcnow()
    async with kernel.database().session(tenant_id=tenant_id, write_lock=True) as session:
        order = (
            await session.execute(
                sa.select(orders)
                .where(orders.c.tenant_id == tenant_id, orders.c.id == order_id, orders.c.status == "open")
                .with_for_update()
            )
        ).first()
        if order is None:
            return 0  # filled or cancelled meanwhile
        base, quote = split_symbol(order.symbol)
        found = await _balances_for_update(session, tenant_id, account.id, (base, quote))
        amount, price, reserved = dec(order.amount), dec(order.price), dec(order.reserved)
        cost = amount * price
        fee = cost * fee_rate
        if order.side == "buy":
            await _adjust(session, tenant_id, account.id, found, quote, free=reserved - cost - fee, locked=-reserved)
            await _adjust(session, tenant_id, account.id, found, base, free=amount)
        else:
            await _adjust(session, tenant_id, account.id, found, base, locked=-reserved)
            await _adjust(session, tenant_id, account.id, found, quote, free=cost - fee)
        values = {"status": "filled", "filled": order.amount, "average": text(price), "fee": text(fee), "closed_at": now, "reserved": "0"}
        await session.execute(sa.update(orders).where(orders.c.tenant_id == tenant_id, orders.c.id == order_id).values(**values))
        await _record_fill(kernel, session, tenant_id, account.id, {**order._asdict(), **values}, price, amount, fee, now)
    return 1


async def cancel_order(kernel: Kernel, tenant_id: str, order_id: str) -> dict[str, Any]:
    async with kernel.database().session(tenant_id=tenant_id, write_lock=True) as session:
        order = (
            await session.execute(sa.select(orders).where(orders.c.tenant_id == tenant_id, orders.c.id == order_id).with_for_update())
        ).first()
        if order is None:
            raise not_found("order")
        if order.status != "open":
            raise ProblemError(409, "Order not open", f"The order is {order.status}; only open orders can be cancelled.")
        account = (
            await session.execute(sa.select(accounts).where(accounts.c.tenant_id == tenant_id, accounts.c.id == order.account_id))
        ).one()
        if account.exchange != PAPER:
            raise ProblemError(409, "Live order", "Cancel live orders on the exchange.")
        base, quote = split_symbol(order.symbol)
        asset = quote if order.side == "buy" else base
        found = await _balances_for_update(session, tenant_id, account.id, (asset,))
        reserved = dec(order.reserved)
        await _adjust(session, tenant_id, account.id, found, asset, free=reserved, locked=-reserved)
        values = {"status": "cancelled", "closed_at": utcnow(), "reserved": "0"}
        await session.execute(sa.update(orders).where(orders.c.tenant_id == tenant_id, orders.c.id == order_id).values(**values))
    return order_view(_Row({**order._asdict(), **values}), [])


async def list_orders(kernel: Kernel, tenant_id: str, account_id: str | None, limit: int) -> list[dict[str, Any]]:
    async with kernel.database().session(tenant_id=tenant_id) as session:
        query = sa.select(orders).where(orders.c.tenant_id == tenant_id)
        if account_id is not None:
            query = query.where(orders.c.account_id == account_id)
        rows = (await session.execute(query.order_by(orders.c.created_at.desc()).limit(limit))).all()
        ids = [row.id for row in rows]
        found = (
            (
                await session.execute(
                    sa.select(fills).where(fills.c.tenant_id == tenant_id, fills.c.order_id.in_(ids)).order_by(fills.c.filled_at)
                )
            ).all()
            if ids
            else []
        )
    by_order: dict[str, list[Any]] = {}
    for fill in found:
        by_order.setdefault(fill.order_id, []).append(fill)
    return [order_view(row, by_order.get(row.id, [])) for row in rows]


async def _live_order(kernel: Kernel, tenant_id: str, account: Any, key: str, request: OrderRequest) -> dict[str, Any]:
    """Send the order to the exchange with a client order id derived from the key, so the exchange refuses a second one too."""
    order_id = str(uuid.uuid4())
    now = utcnow()
    row: dict[str, Any] = {
        "id": order_id,
        "tenant_id": tenant_id,
        "account_id": account.id,
        "client_key": key,
        "exchange_order_id": None,
        "symbol": request.symbol,
        "side": request.side,
        "type": request.type,
        "amount": text(request.amount),
        "price": text(request.price) if request.price is not None else None,
        "status": "pending",
        "filled": "0",
        "average": None,
        "fee": "0",
        "fee_asset": None,
        "reserved": "0",
        "created_at": now,
        "closed_at": None,
    }
    # Claim the key first: a crash after sending leaves a "pending" row, never a second order for the key.
    async with kernel.database().session(tenant_id=tenant_id, write_lock=True) as session:
        await session.execute(sa.insert(orders).values(**row))
    client = await client_for(kernel, account)
    params = {"newClientOrderId": "bcf" + uuid.uuid5(uuid.NAMESPACE_URL, f"{account.id}:{key}").hex[:29]}
    try:
        placed = await call(
            client,
            "create_order",
            request.symbol,
            request.type,
            request.side,
            float(request.amount),
            float(request.price) if request.price is not None else None,
            params,
        )
    except ProblemError as problem:
        if problem.status < 500:  # the exchange refused it: nothing was placed
            async with kernel.database().session(tenant_id=tenant_id) as session:
                await session.execute(
                    sa.update(orders)
                    .where(orders.c.tenant_id == tenant_id, orders.c.id == order_id)
                    .values(status="rejected", closed_at=utcnow())
                )
        # Otherwise the order may or may not be on the exchange: it stays "pending" under its key, so a retry
        # answers with it instead of sending a second one (reconcile it through the exchange's client order id).
        raise
    status = {"open": "open", "closed": "filled", "canceled": "cancelled", "cancelled": "cancelled"}.get(placed.get("status") or "", "open")
    fee = (placed.get("fee") or {}).get("cost")
    values = {
        "exchange_order_id": str(placed.get("id")),
        "status": status,
        "filled": text(dec(placed.get("filled") or 0)),
        "average": text(dec(placed["average"])) if placed.get("average") is not None else None,
        "fee": text(dec(fee or 0)),
        "fee_asset": (placed.get("fee") or {}).get("currency"),
        "closed_at": utcnow() if status != "open" else None,
    }
    async with kernel.database().session(tenant_id=tenant_id) as session:
        await session.execute(sa.update(orders).where(orders.c.tenant_id == tenant_id, orders.c.id == order_id).values(**values))
    return order_view(_Row({**row, **values}), [])


# -- balances ---------------------------------------------------------------------------------


async def paper_balances(kernel: Kernel, tenant_id: str, account_id: str) -> dict[str, Any]:
    """Balances, their value in the account's quote asset at the newest prices, and P&L against what was deposited."""
    account = await get_account(kernel, tenant_id, account_id)
    if account.exchange != PAPER:
        raise _field(422, "Not a paper account", "Balances of live accounts are on the exchange.", "account_id", "not a paper account")
    await sweep(kernel, tenant_id, account)
    settings = state_of(kernel).settings
    valuation = next(iter(settings.paper_starting_balances), "USDT")
    source = account.price_source or settings.paper_price_source
    async with kernel.database().session(tenant_id=tenant_id) as session:
        rows = (
            await session.execute(
                sa.select(balances).where(balances.c.tenant_id == tenant_id, balances.c.account_id == account_id).order_by(balances.c.asset)
            )
        ).all()
    out = []
    equity = deposited = Decimal(0)
    priced = True
    for row in rows:
        total = dec(row.free) + dec(row.locked)
        price: Decimal | None = Decimal(1) if row.asset == valuation else None
        if price is None:
            found = await _candles.last_price(kernel, source, f"{row.asset}/{valuation}")
            price = dec(found[0]) if found is not None else None
        value = total * price if price is not None else None
        if value is None and total != 0:
            priced = False
        equity += value or Decimal(0)
        deposited += dec(row.deposited) * (price or Decimal(0))
        out.append(
            {
                "asset": row.asset,
                "free": row.free,
                "locked": row.locked,
                "total": text(total),
                "price": text(price) if price is not None else None,
                "value": text(value) if value is not None else None,
            }
        )
    pnl = equity - deposited
    return {
        "account_id": account_id,
        "valuation_asset": valuation,
        "balances": out,
        "equity": text(equity),
        "deposited": text(deposited),
        "pnl": text(pnl),
        "pnl_percent": float(pnl / deposited * 100) if deposited else 0.0,
        "complete": priced,
    }


# -- privacy ----------------------------------------------------------------------------------


async def export_tenant(kernel: Kernel, tenant_id: str) -> dict[str, Any]:
    """A tenant's accounts (key hints only), balances and orders, for a data-portability request."""
    async with kernel.database().session(tenant_id=tenant_id) as session:
        rows = (await session.execute(sa.select(accounts).where(accounts.c.tenant_id == tenant_id))).all()
        held = (await session.execute(sa.select(balances).where(balances.c.tenant_id == tenant_id))).all()
    return {
        "accounts": [account_view(row) for row in rows],
        "balances": [{"account_id": b.account_id, "asset": b.asset, "free": b.free, "locked": b.locked} for b in held],
        "orders": await list_orders(kernel, tenant_id, None, 10_000),
    }


async def erase_tenant(kernel: Kernel, tenant_id: str) -> dict[str, Any]:
    """Unlink every account of the tenant (keys, balances and orders go with them)."""
    async with kernel.database().session(tenant_id=tenant_id) as session:
        ids = [row.id for row in (await session.execute(sa.select(accounts.c.id).where(accounts.c.tenant_id == tenant_id))).all()]
    for account_id in ids:
        await unlink_account(kernel, tenant_id, account_id)
    return {"erased": {"exchange_accounts": len(ids)}}


async def reencrypt(kernel: Kernel, box: Any) -> int:
    """Re-seal every account's keys under the box's current key."""
    changed = 0
    async with kernel.database().session(system=True, write_lock=True) as session:
        rows = (
            await session.execute(
                sa.select(accounts.c.id, accounts.c.api_key, accounts.c.api_secret).where(accounts.c.api_key.is_not(None))
            )
        ).all()
        for row in rows:
            values = {}
            for column in ("api_key", "api_secret"):
                sealed = getattr(row, column)
                if box.needs_reseal(sealed):
                    values[column] = box.seal(box.open(sealed, context=context(row.id, column)), context=context(row.id, column))
            if values:
                await session.execute(sa.update(accounts).where(accounts.c.id == row.id).values(**values))
                changed += len(values)
    return changed
