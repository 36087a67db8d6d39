"""Events the exchanges plugin publishes (through the outbox, in the transaction that made them true)."""

from __future__ import annotations

from botcriptofy import Event


class OrderFilled(Event):
    event_type = "exchanges.order_filled"

    tenant_id: str
    account_id: str
    order_id: str
    symbol: str
    side: str
    amount: str
    price: str
    fee: str
    paper: bool


class AccountLinked(Event):
    event_type = "exchanges.account_linked"

    tenant_id: str
    account_id: str
    exchange: str


class AccountUnlinked(Event):
    event_type = "exchanges.account_unlinked"

    tenant_id: str
    account_id: str
    exchange: str
