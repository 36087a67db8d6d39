"""Events the trading plugin publishes (through the outbox, in the transaction that made them true)."""

from __future__ import annotations

from botcriptofy import Event


class BotOrderFilled(Event):
    event_type = "trading.order_filled"

    tenant_id: str
    bot_id: str
    order_id: str
    symbol: str
    side: str
    amount: str
    price: str
    fee: str
    reason: str


class BotStopped(Event):
    event_type = "trading.bot_stopped"

    tenant_id: str
    bot_id: str
    reason: str  # stop_loss, max_daily_loss, user, staff
    detail: str


class DailyLossHit(Event):
    event_type = "trading.daily_loss_hit"

    tenant_id: str
    bot_id: str
    loss: str
    limit: str
