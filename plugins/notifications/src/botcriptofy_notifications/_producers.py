"""Billing's and auth's events turned into notifications (subscribed to by type name, not by import)."""

from __future__ import annotations

from typing import Any

from botcriptofy import Envelope, EventHandler, Kernel, Notification

from ._state import settings_of


def _amount(value: Any) -> str:
    if isinstance(value, dict) and "amount_minor" in value:
        currency = str(value.get("currency", ""))
        return f"{currency} {int(value['amount_minor']) / 100:.2f}".strip()
    return str(value)


def notifications_for(envelope: Envelope, security: str) -> list[Notification]:
    p = envelope.payload
    kind = envelope.type
    if kind == "billing.payment_failed":
        params = {
            "invoice_id": p["invoice_id"],
            "amount": _amount(p.get("amount_due")),
            "tenant_id": p["tenant_id"],
            "attempt_count": p.get("attempt_count"),
            "final": bool(p.get("final")),
        }
        severity = "error" if p.get("final") else "warning"
        key = f"payment_failed:{p['invoice_id']}:{p.get('attempt_count')}"
        return [
            Notification(
                recipient=f"tenant:{p['tenant_id']}",
                category=kind,
                severity=severity,
                template=kind,
                params=params,
                dedup_key=key,
                tenant_id=p["tenant_id"],
            ),
            Notification(recipient="department:finance", category=kind, severity=severity, template=kind, params=params, dedup_key=key),
        ]
    if kind in ("billing.quota_warning", "billing.quota_exhausted"):
        limit = int(p.get("limit") or 0)
        params = {
            **{k: p.get(k) for k in ("quota", "used", "limit", "plan", "upgrade_to")},
            "percent": 100 if kind.endswith("exhausted") else (round(100 * int(p["used"]) / limit) if limit else 80),
        }
        return [
            Notification(
                recipient=f"tenant:{p['tenant_id']}",
                category=kind,
                severity="warning",
                template=kind,
                params=params,
                dedup_key=f"{kind}:{p['quota']}:{p.get('period')}",
                tenant_id=p["tenant_id"],
            )
        ]
    if kind == "billing.trial_ending":
        return [
            Notification(
                recipient=f"tenant:{p['tenant_id']}",
                category=kind,
                template=kind,
                params={"plan": p.get("plan"), "trial_end": p.get("trial_end") or "-"},
                dedup_key=f"trial_ending:{p['subscription_id']}",
                tenant_id=p["tenant_id"],
            )
        ]
    if kind == "auth.account_locked":
        params = {k: p.get(k) for k in ("email", "failures", "ip", "locked_until")}
        key = f"locked:{p['user_id']}:{p.get('locked_until')}"
        return [
            Notification(
                recipient=f"user:{p['user_id']}",
                category=kind,
                severity="warning",
                template=kind,
                params=params,
                dedup_key=key,
                tenant_id=p.get("tenant_id"),
            ),
            Notification(
                recipient=f"department:{security}", category=kind, severity="warning", template=kind, params=params, dedup_key=key
            ),
        ]
    if kind == "auth.new_ip_login":
        return [
            Notification(
                recipient=f"user:{p['user_id']}",
                category="auth.new_device",
                severity="warning",
                template="auth.new_device",
                params={"ip": p.get("ip"), "device": p.get("user_agent") or "-"},
                dedup_key=f"new_ip:{p['user_id']}:{p.get('ip')}",
                tenant_id=p.get("tenant_id"),
            )
        ]
    if kind == "auth.refresh_token_reused":
        return [
            Notification(
                recipient=f"department:{security}",
                category=kind,
                severity="critical",
                template=kind,
                params={"user_id": p["user_id"], "ip": p.get("ip") or "-"},
                dedup_key=f"reuse:{p['session_id']}",
            )
        ]
    return []


BRIDGED = (
    "billing.payment_failed",
    "billing.quota_warning",
    "billing.quota_exhausted",
    "billing.trial_ending",
    "auth.account_locked",
    "auth.new_ip_login",
    "auth.refresh_token_reused",
)


def handlers(kernel: Kernel) -> list[EventHandler]:
    async def bridge(envelope: Envelope) -> None:
        current = kernel.current()
        settings = settings_of(current)
        if not settings.bridge_events:
            return
        for notification in notifications_for(envelope, settings.security_department):
            await current.notify(notification)

    return [EventHandler("notifications.bridge", bridge, events=BRIDGED)]
