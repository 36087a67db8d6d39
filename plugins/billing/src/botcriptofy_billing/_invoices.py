"""The invoice ledger: each invoice webhook updates its invoice's row, newest event wins."""

from __future__ import annotations

from typing import Any

from ._models import Invoice
from ._service import now

# Same-second events: a paid invoice stays paid (Stripe never reopens one).
_FINAL = frozenset({"paid", "void", "uncollectible"})


def _status(kind: str, invoice: dict[str, Any]) -> str:
    if kind in ("invoice.paid", "invoice.payment_succeeded"):
        return "paid"
    if kind == "invoice.payment_failed":
        return "payment_failed"
    return str(invoice.get("status") or "open")


async def record(
    session: Any, *, tenant_id: str, kind: str, invoice: dict[str, Any], created: int, currency: str, subscription_id: str | None
) -> Invoice:
    """Insert or update the invoice of an ``invoice.*`` event in ``session``; an older event than the row's changes nothing."""
    status = _status(kind, invoice)
    transitions = invoice.get("status_transitions") or {}
    paid_at = transitions.get("paid_at") or (created if status == "paid" else None)
    row = await session.get(Invoice, invoice["id"])
    if row is None:
        row = Invoice(
            id=invoice["id"],
            tenant_id=tenant_id,
            created=int(invoice.get("created") or created),
            state_as_of=-1,
            attempt_count=0,
            amount_due=0,
            amount_paid=0,
            currency=currency.upper(),
            status=status,
            updated_at=now(),
        )
        session.add(row)
    elif created < row.state_as_of or (created == row.state_as_of and row.status in _FINAL and status not in _FINAL):
        return row
    row.subscription_id = subscription_id
    row.number = invoice.get("number") or row.number
    row.status = status
    row.currency = currency.upper()
    row.amount_due = int(invoice.get("amount_due") or 0)
    row.amount_paid = int(invoice.get("amount_paid") or 0)
    row.attempt_count = max(int(invoice.get("attempt_count") or 0), row.attempt_count)
    row.paid_at = int(paid_at) if paid_at else row.paid_at
    row.state_as_of = created
    row.updated_at = now()
    return row
