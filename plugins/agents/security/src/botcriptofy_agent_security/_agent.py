"""The security agent: windows over authentication events, its rules, context and actions."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from botcriptofy import Actor, Envelope
from botcriptofy_agents import (
    ActionRequest,
    ActionSpec,
    Agent,
    Decision,
    Trigger,
    decision_model,
    notify,
    read_decisions,
    runner_of,
    settings_of,
)

from ._settings import ACTIONS, SecuritySettings

NAME = "agent_security"
DEPARTMENT = "security"
SecurityDecision = decision_model("SecurityDecision", ACTIONS)

INSTRUCTIONS = (
    "You watch failed logins, lockouts, rate limits, new login addresses and account activity. "
    "Choose the least drastic action that contains the risk."
)

# Event types the agent aggregates (every other event only counts towards an account's activity).
FAILED, LOCKED, PENALIZED, NEW_IP, REUSED = (
    "auth.login_failed",
    "auth.account_locked",
    "ratelimit.subject_penalized",
    "auth.new_ip_login",
    "auth.refresh_token_reused",
)
ACTIVITY_WINDOW = 3600.0
AGGREGATED = (FAILED, LOCKED, PENALIZED, NEW_IP, REUSED)


def subscribed(settings: SecuritySettings) -> tuple[str, ...]:
    """The event types the agent's handler receives: those it aggregates and ``activity_events`` (``*``: every event).

    Subscribing to every event would cost each request that publishes anything a call of the
    handler (and, with the outbox, a delivery row per event).
    """
    if "*" in settings.activity_events:
        return ("*",)
    return tuple(dict.fromkeys((*AGGREGATED, *settings.activity_events)))


def pseudonym(kind: str, value: str) -> str:
    """A stable pseudonymous id for an address or an e-mail: what records and prompts carry instead."""
    return f"{kind}:{hashlib.sha256(value.encode()).hexdigest()[:16]}"


def _decision(action: str, severity: str, confidence: float, rationale: str, **parameters: str) -> Decision:
    return SecurityDecision(action=action, severity=severity, confidence=confidence, rationale=rationale, parameters=parameters)


def rules(trigger: Trigger, context: Mapping[str, Any], settings: SecuritySettings) -> Decision:
    """The deterministic decision (SPEC §7 thresholds); the fallback whenever the model fails."""
    data = trigger.data
    kind = trigger.kind
    if kind == "failed_logins":
        failures = int(data.get("failures", 0))
        if data.get("scope") == "address":
            if int(data.get("accounts", 0)) >= settings.stuffing_accounts:
                return _decision(
                    "open_incident", "high", 0.9, f"{data.get('accounts')} accounts failing from one address: credential stuffing."
                )
            if failures >= settings.failed_login_threshold:
                return _decision("notify", "warning", 0.8, f"{failures} failed logins from one address in the window.")
            return _decision("none", "info", 0.9, "Failed logins from this address are below the threshold.")
        if failures >= settings.lock_threshold:
            return _decision("lock_account", "high", 0.85, f"{failures} failed logins on one account in the window: lock it.")
        if failures >= settings.failed_login_threshold:
            return _decision("notify", "warning", 0.8, f"{failures} failed logins on one account in the window.")
        return _decision("none", "info", 0.9, "Failed logins on this account are below the threshold.")
    if kind == "account_locked":
        if int(context.get("incidents_24h", 0)) >= settings.escalate_after_incidents:
            return _decision("lock_account", "critical", 0.85, "Locked again after earlier incidents: block the account.")
        return _decision("open_incident", "high", 0.85, "The account was locked by failed logins from many addresses.")
    if kind == "rate_limited":
        return _decision("notify", "warning", 0.8, "A client was penalised by the rate limiter.")
    if kind == "new_location":
        if data.get("new_country"):
            return _decision("open_incident", "high", 0.75, "Login from a country this account never used.")
        if int(data.get("known_addresses", 0)) >= 1:
            return _decision("notify", "info", 0.7, "Login from a new address.")
        return _decision("none", "info", 0.9, "First login of the account: nothing to compare.")
    if kind == "token_reuse":
        return _decision("revoke_sessions", "critical", 0.9, "A used refresh token came back: the session is stolen.")
    if kind == "activity":
        actions = int(data.get("actions", 0))
        if actions > settings.activity_revoke_threshold:
            return _decision("revoke_sessions", "high", 0.8, f"{actions} actions in an hour: far above any person.")
        if actions > settings.activity_threshold:
            return _decision("open_incident", "warning", 0.75, f"{actions} actions in an hour on one account.")
        return _decision("none", "info", 0.9, "Activity within the normal range.")
    return _decision("none", "info", 0.5, f"No rule for '{kind}'.")


async def gather(kernel: Any, actor: Actor, trigger: Trigger) -> dict[str, Any]:
    """Read-only context: this department's earlier decisions on the subject (ids and counts, no personal data)."""
    from datetime import UTC, datetime

    since = datetime.now(UTC) - timedelta(hours=24)
    earlier = await read_decisions(kernel, actor, department=DEPARTMENT, subject=trigger.subject, since=since, limit=200)
    return {
        "decisions_24h": len(earlier),
        "incidents_24h": sum(1 for d in earlier if d["action"] == "open_incident" and d["outcome"] == "executed"),
        "pending_approvals": sum(1 for d in earlier if d["outcome"] == "awaiting_approval"),
    }


async def _notify(kernel: Any, actor: Actor, trigger: Trigger, decision: Decision) -> dict[str, Any]:
    return await notify(
        kernel, AGENT, settings_of(kernel, AGENT), trigger, decision, subject=f"[Segurança] {trigger.kind}: {trigger.subject}"
    )


async def _open_incident(kernel: Any, actor: Actor, trigger: Trigger, decision: Decision) -> dict[str, Any]:
    """An incident is this decision record (``/incidents`` lists them), announced to the department."""
    sent = await notify(
        kernel, AGENT, settings_of(kernel, AGENT), trigger, decision, subject=f"[Segurança] Incidente: {trigger.kind} ({trigger.subject})"
    )
    return {"incident": True, **sent}


def _account(trigger: Trigger) -> str:
    if not trigger.user_id:
        raise ValueError(f"trigger '{trigger.kind}' names no account to act on")
    return trigger.user_id


def _propose_lock(kernel: Any, trigger: Trigger, decision: Decision) -> ActionRequest:
    settings: SecuritySettings = settings_of(kernel, AGENT)  # type: ignore[assignment]
    user_id = _account(trigger)
    return ActionRequest(
        action=settings.lock_action,
        permission="users:block",
        summary=f"Bloquear a conta {user_id}: {decision.rationale}",
        payload={"user_id": user_id, "reason": f"security agent: {decision.rationale}"[:200]},
        tenant_id=trigger.tenant_id,
    )


def _propose_revoke(kernel: Any, trigger: Trigger, decision: Decision) -> ActionRequest:
    settings: SecuritySettings = settings_of(kernel, AGENT)  # type: ignore[assignment]
    user_id = _account(trigger)
    return ActionRequest(
        action=settings.revoke_action,
        permission="sessions:revoke",
        summary=f"Encerrar as sessões da conta {user_id}: {decision.rationale}",
        payload={"user_id": user_id, "reason": f"security agent: {decision.rationale}"[:200]},
        tenant_id=trigger.tenant_id,
    )


AGENT = Agent(
    name=NAME,
    department=DEPARTMENT,
    decision=SecurityDecision,
    rules=rules,  # type: ignore[arg-type]
    gather=gather,
    actions={
        "notify": ActionSpec("notify", execute=_notify),
        "open_incident": ActionSpec("open_incident", execute=_open_incident),
        "lock_account": ActionSpec("lock_account", propose=_propose_lock),
        "revoke_sessions": ActionSpec("revoke_sessions", propose=_propose_revoke),
    },
    instructions=INSTRUCTIONS,
    prompt_version="2",
    description="Failed logins, lockouts, rate-limit refusals, new addresses and unusual activity.",
)


def observe(kernel: Any, envelope: Envelope, now: float | None = None) -> None:
    """Update the windows with one event and queue a trigger when a threshold is crossed (never waits for a decision)."""
    runner = runner_of(kernel, AGENT)
    if runner is None or runner.stopping:
        return
    settings: SecuritySettings = settings_of(kernel, AGENT)  # type: ignore[assignment]
    now = time.monotonic() if now is None else now
    payload = envelope.payload
    windows = runner.windows
    window = settings.failed_login_window
    user_id = payload.get("user_id")
    tenant_id = payload.get("tenant_id") or envelope.tenant_id
    if envelope.type == FAILED:
        account = str(user_id) if user_id else pseudonym("email", str(payload.get("email", "")).lower())
        failures = windows.hit(("failed", account), now, window)
        level = "lock" if failures >= settings.lock_threshold else "alert" if failures >= settings.failed_login_threshold else None
        if level and windows.fire_once(("failed", account, level), now, window):
            runner.submit(
                Trigger(
                    "failed_logins",
                    account,
                    {"scope": "account", "failures": failures, "window_s": window},
                    tenant_id=tenant_id,
                    user_id=str(user_id) if user_id else None,
                )
            )
        if payload.get("ip"):
            address = pseudonym("addr", str(payload["ip"]))
            from_address = windows.hit(("address", address), now, window, value=account)
            accounts = windows.distinct(("address", address), now, window)
            level = (
                "stuffing"
                if accounts >= settings.stuffing_accounts
                else "alert"
                if from_address >= settings.failed_login_threshold
                else None
            )
            if level and windows.fire_once(("address", address, level), now, window):
                runner.submit(
                    Trigger(
                        "failed_logins", address, {"scope": "address", "failures": from_address, "accounts": accounts, "window_s": window}
                    )
                )
    elif envelope.type == LOCKED and user_id:
        runner.submit(
            Trigger("account_locked", str(user_id), {"failures": payload.get("failures", 0)}, tenant_id=tenant_id, user_id=str(user_id))
        )
    elif envelope.type == PENALIZED:
        subject = pseudonym("client", str(payload.get("subject", "")))
        if windows.fire_once(("penalized", subject), now, window):
            runner.submit(Trigger("rate_limited", subject, {"status": payload.get("status")}, tenant_id=tenant_id))
    elif envelope.type == NEW_IP and user_id:
        country = payload.get("country")
        new_country = False
        if country:
            seen = windows.values(("countries", str(user_id)), now, 90 * 86400)
            new_country = bool(seen) and country not in seen
            windows.hit(("countries", str(user_id)), now, 90 * 86400, value=country)
        runner.submit(
            Trigger(
                "new_location",
                str(user_id),
                {"known_addresses": int(payload.get("known_ips", 0)), "new_country": new_country},
                tenant_id=tenant_id,
                user_id=str(user_id),
            )
        )
    elif envelope.type == REUSED and user_id:
        runner.submit(Trigger("token_reuse", str(user_id), {}, tenant_id=tenant_id, user_id=str(user_id)))
    if user_id and not envelope.type.startswith(("kernel.", "approvals.")):
        actions = windows.hit(("activity", str(user_id)), now, ACTIVITY_WINDOW)
        level = "revoke" if actions > settings.activity_revoke_threshold else "incident" if actions > settings.activity_threshold else None
        if level and windows.fire_once(("activity", str(user_id), level), now, ACTIVITY_WINDOW):
            runner.submit(
                Trigger(
                    "activity", str(user_id), {"actions": actions, "window_s": ACTIVITY_WINDOW}, tenant_id=tenant_id, user_id=str(user_id)
                )
            )
