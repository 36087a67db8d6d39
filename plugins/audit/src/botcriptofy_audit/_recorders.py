"""Turn the events other plugins and the kernel already publish into audit entries.

Entries keep pseudonymous ids only: an e-mail an event carries (a failed login for an unknown
address) is never copied; the entry's ``subject`` is the user id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from botcriptofy import AuditRecord, Envelope, EventHandler, Kernel

from ._chain import append
from ._grants import secure
from ._state import state_of

Mapper = Callable[[dict[str, Any]], list[AuditRecord]]


# The actor of a staff change made from the command line, where no person is signed in.
OPERATOR = "operator"


def _user(p: dict[str, Any], action: str, *, outcome: str = "success", actor: str | None = None, **details: Any) -> list[AuditRecord]:
    user = p.get("user_id")
    return [
        AuditRecord(
            action=action,
            actor_id=actor if actor is not None else user,
            actor_kind="operator" if actor == OPERATOR else ("user" if (actor or user) else None),
            tenant_id=p.get("tenant_id"),
            target=f"user:{user}" if user else None,
            outcome=outcome,
            subject=user,
            client_address=p.get("ip"),
            details={k: v for k, v in details.items() if v is not None},
        )
    ]


def _config(p: dict[str, Any]) -> list[AuditRecord]:
    action = "config.rolled_back" if p.get("rollback_to") is not None else "config.applied"
    records = [
        AuditRecord(
            action=action,
            actor_kind="operator",
            actor_id=p.get("source"),
            target=f"config:{p.get('version')}",
            details={
                k: p.get(k) for k in ("version", "generation", "source", "rollback_to", "started", "stopped", "restarted", "reconfigured")
            },
        )
    ]
    for name in p.get("started") or ():
        records.append(
            AuditRecord(
                action="plugin.enabled",
                actor_kind="operator",
                actor_id=p.get("source"),
                target=f"plugin:{name}",
                details={"version": p.get("version")},
            )
        )
    for name in p.get("stopped") or ():
        records.append(
            AuditRecord(
                action="plugin.disabled",
                actor_kind="operator",
                actor_id=p.get("source"),
                target=f"plugin:{name}",
                details={"version": p.get("version")},
            )
        )
    return records


def _billing(action: str, *keys: str) -> Mapper:
    def build(p: dict[str, Any]) -> list[AuditRecord]:
        target = p.get("subscription_id") or p.get("invoice_id")
        return [
            AuditRecord(
                action=action,
                actor_kind="system",
                actor_id="billing",
                tenant_id=p.get("tenant_id"),
                target=f"billing:{target}" if target else None,
                outcome="failure" if action.endswith("_failed") else "success",
                details={k: p.get(k) for k in keys if p.get(k) is not None},
            )
        ]

    return build


MAPPERS: dict[str, Mapper] = {
    "auth.user_signed_up": lambda p: _user(p, "auth.signup", account_type=p.get("account_type"), method=p.get("method")),
    "auth.login_succeeded": lambda p: _user(p, "auth.login", method=p.get("method"), session_id=p.get("session_id")),
    "auth.login_failed": lambda p: _user(p, "auth.login", outcome="failure", reason=p.get("reason"), failures=p.get("failures")),
    "auth.account_locked": lambda p: _user(
        p, "auth.lockout", outcome="denied", failures=p.get("failures"), locked_until=p.get("locked_until")
    ),
    "auth.login_throttled": lambda p: _user(
        p, "auth.login_throttled", outcome="denied", failures=p.get("failures"), retry_after=p.get("retry_after")
    ),
    "auth.influencer_approved": lambda p: [
        AuditRecord(
            action="auth.influencer_approved",
            actor_kind="user",
            actor_id=p.get("approved_by"),
            tenant_id=p.get("tenant_id"),
            target=f"tenant:{p.get('tenant_id')}",
            details={"plan": p.get("plan")},
        )
    ],
    "auth.new_ip_login": lambda p: _user(p, "auth.new_ip_login", known_ips=p.get("known_ips")),
    "auth.refresh_token_reused": lambda p: _user(p, "auth.refresh_token_reused", outcome="denied", session_id=p.get("session_id")),
    "auth.sessions_revoked": lambda p: _user(p, "auth.sessions_revoked", reason=p.get("reason"), sessions=len(p.get("session_ids") or ())),
    "auth.api_key_created": lambda p: [
        replace(r, target=f"api_key:{p.get('key_id')}")
        for r in _user(p, "auth.api_key_created", scopes=p.get("scopes"), expires_at=p.get("expires_at"))
    ],
    "auth.api_key_revoked": lambda p: [replace(r, target=f"api_key:{p.get('key_id')}") for r in _user(p, "auth.api_key_revoked")],
    "auth.staff_roles_changed": lambda p: _user(p, "auth.roles_changed", actor=p.get("changed_by") or OPERATOR, roles=p.get("roles")),
    "auth.totp_enabled": lambda p: _user(p, "auth.totp_enabled"),
    "auth.user_blocked": lambda p: _user(
        p, "auth.user_blocked" if p.get("blocked") else "auth.user_unblocked", actor=p.get("by") or OPERATOR, reason=p.get("reason")
    ),
    "billing.subscription_changed": _billing(
        "billing.subscription_changed", "plan", "previous_plan", "status", "previous_status", "interval", "cancel_at_period_end", "reason"
    ),
    "billing.payment_failed": _billing("billing.payment_failed", "invoice_id", "amount_due", "attempt_count", "final"),
    "billing.payment_succeeded": _billing("billing.payment_succeeded", "invoice_id", "amount_paid"),
    "kernel.config_applied": _config,
}


def handlers(kernel: Kernel) -> list[EventHandler]:
    async def record(envelope: Envelope) -> None:
        mapper = MAPPERS.get(envelope.type)
        if mapper is None:
            return
        current = kernel.current()
        state = state_of(current)
        database = current.database()
        for position, made in enumerate(mapper(dict(envelope.payload))):
            event_id = hashlib.sha256(f"{envelope.type}:{envelope.idempotency_key}:{position}".encode()).hexdigest()
            await append(database, state.keyring, state.policy, replace(made, occurred_at=envelope.occurred_at), event_id=event_id)
        if envelope.type == "kernel.config_applied" and envelope.payload.get("started"):
            # A plugin switched on ran its migrations, after which storage re-grants every table: take UPDATE/DELETE back.
            await secure(database)

    return [EventHandler("audit-trail", record, events=tuple(MAPPERS))]
