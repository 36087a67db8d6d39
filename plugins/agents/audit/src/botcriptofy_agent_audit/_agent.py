"""The audit agent: scheduled chain verification, irregular staff access, privacy deadlines at risk."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botcriptofy import Actor, AuditRecord, ProblemError, StashKey
from botcriptofy_agents import (
    ActionRequest,
    ActionSpec,
    Agent,
    Decision,
    Periodic,
    Trigger,
    decision_model,
    notify,
    read_decisions,
    runner_of,
    settings_of,
)

from ._settings import ACTIONS, AuditAgentSettings

log = logging.getLogger("botcriptofy.agents.audit")

NAME = "agent_audit"
DEPARTMENT = "audit"
AuditDecision = decision_model("AuditDecision", ACTIONS)

INSTRUCTIONS = (
    "You watch the audit trail: the integrity of its hash chains, staff accounts reading many tenants' data in a short window, "
    "and privacy requests close to or past their legal deadline. Open an incident for a broken chain or an overdue request; "
    "propose logging a staff account out only for reads far beyond normal work."
)

# Audit entries of the lgpd plugin the agent turns into privacy-deadline triggers.
DEADLINE_NEAR, OVERDUE = "privacy.request_deadline_near", "privacy.request_overdue"


@dataclass
class Watch:
    """What the agent remembers between triggers (per process): the last verification, for ``/audit`` and ``/integrity``."""

    last_verification: dict[str, Any] | None = None
    verified_at: datetime | None = None
    reads_seen: int = 0


WATCH: StashKey[Watch] = StashKey("botcriptofy_agent_audit.watch")


def watch_of(kernel: Any) -> Watch:
    return kernel.stash.setdefault(WATCH, Watch())  # type: ignore[no-any-return]


def _decision(action: str, severity: str, confidence: float, rationale: str, **parameters: str) -> Decision:
    return AuditDecision(action=action, severity=severity, confidence=confidence, rationale=rationale[:80], parameters=parameters)


def rules(trigger: Trigger, context: Mapping[str, Any], settings: AuditAgentSettings) -> Decision:
    """The deterministic decision; the fallback whenever the model fails."""
    data = trigger.data
    kind = trigger.kind
    if kind == "chain_verification":
        if not context.get("available", False):
            return _decision("notify", "warning", 0.8, "The audit chains could not be verified.")
        if context.get("valid"):
            return _decision("none", "info", 0.95, f"{int(context.get('entries', 0))} audit entries verified intact.")
        return _decision("open_incident", "critical", 0.95, f"Audit chain broken: entry {context.get('problem') or 'unknown'}.")
    if kind == "irregular_access":
        tenants = int(data.get("tenants", 0))
        if tenants >= settings.access_revoke_tenants:
            return _decision("revoke_sessions", "critical", 0.8, f"One staff account read {tenants} tenants in the window.")
        if tenants >= settings.access_tenants:
            return _decision("notify", "high", 0.8, f"One staff account read {tenants} tenants in the window.")
        return _decision("none", "info", 0.9, "Reads across tenants within the normal range.")
    if kind == "privacy_deadline":
        if data.get("overdue"):
            return _decision("open_incident", "critical", 0.95, "A privacy request passed its legal deadline.")
        days_left = int(data.get("days_left", 15))
        if days_left <= settings.privacy_days_at_risk:
            return _decision("notify", "warning", 0.85, f"A privacy request is due in {days_left} days.")
        return _decision("none", "info", 0.9, "The privacy request is within its deadline.")
    return _decision("none", "info", 0.5, f"No rule for '{kind}'.")


async def verify_chains(kernel: Any, actor: Actor, chain: str | None = None) -> dict[str, Any]:
    """Verify through the audit plugin's ``audit_verify_chains`` hook, as ``actor``; a summary without personal data.

    ``available`` is False when no plugin answers the hook (the audit plugin is off) or ``actor``
    may not verify; ``error`` says which.
    """
    hook = getattr(kernel.hook, "audit_verify_chains", None)
    if hook is None or not hook.get_hookimpls():
        return {"available": False, "error": "no audit trail (the audit plugin is not enabled)"}
    try:
        report = hook(kernel=kernel, actor=actor, chain=chain)
        if inspect.isawaitable(report):
            report = await report
    except ProblemError as error:
        return {"available": False, "error": str(error.detail or error.title)[:200]}
    if report is None:
        return {"available": False, "error": "no audit trail answered"}
    problem = report.get("first_problem") or None
    summary = {
        "available": True,
        "valid": bool(report.get("valid")),
        "entries": int(report.get("entries", 0)),
        "chains": len(report.get("chains") or ()),
        "problem": f"{problem['chain']}#{problem['seq']} {problem['kind']}" if problem else None,
    }
    watch = watch_of(kernel)
    watch.last_verification, watch.verified_at = summary, datetime.now(UTC)
    return summary


async def gather(kernel: Any, actor: Actor, trigger: Trigger) -> dict[str, Any]:
    """Read-only context: this department's recent decisions on the subject; for a verification, the verification itself."""
    since = datetime.now(UTC) - timedelta(hours=24)
    earlier = await read_decisions(kernel, actor, department=DEPARTMENT, subject=trigger.subject, since=since, limit=200)
    context: dict[str, Any] = {
        "decisions_24h": len(earlier),
        "incidents_24h": sum(1 for d in earlier if d["action"] == "open_incident" and d["outcome"] == "executed"),
    }
    if trigger.kind == "chain_verification":
        context.update(await verify_chains(kernel, actor))
    return context


async def _notify(kernel: Any, actor: Actor, trigger: Trigger, decision: Decision) -> dict[str, Any]:
    return await notify(
        kernel, AGENT, settings_of(kernel, AGENT), trigger, decision, subject=f"[Auditoria] {trigger.kind}: {trigger.subject}"
    )


async def _open_incident(kernel: Any, actor: Actor, trigger: Trigger, decision: Decision) -> dict[str, Any]:
    """An incident is this decision record (``/audit`` lists them), announced to the department."""
    sent = await notify(
        kernel, AGENT, settings_of(kernel, AGENT), trigger, decision, subject=f"[Auditoria] Incidente: {trigger.kind} ({trigger.subject})"
    )
    return {"incident": True, **sent}


def _propose_revoke(kernel: Any, trigger: Trigger, decision: Decision) -> ActionRequest:
    settings: AuditAgentSettings = settings_of(kernel, AGENT)  # type: ignore[assignment]
    if not trigger.user_id:
        raise ValueError(f"trigger '{trigger.kind}' names no account to act on")
    return ActionRequest(
        action=settings.revoke_action,
        permission="sessions:revoke",
        summary=f"Encerrar as sessões da conta {trigger.user_id}: {decision.rationale}",
        payload={"user_id": trigger.user_id, "reason": f"audit agent: {decision.rationale}"[:200]},
        tenant_id=trigger.tenant_id,
    )


async def _verify(kernel: Any) -> dict[str, bool]:
    return {"queued": verification_due(kernel) is not None}


AGENT = Agent(
    name=NAME,
    department=DEPARTMENT,
    decision=AuditDecision,
    rules=rules,  # type: ignore[arg-type]
    gather=gather,
    actions={
        "notify": ActionSpec("notify", execute=_notify),
        "open_incident": ActionSpec("open_incident", execute=_open_incident),
        "revoke_sessions": ActionSpec("revoke_sessions", propose=_propose_revoke),
    },
    instructions=INSTRUCTIONS,
    prompt_version="1",
    periodic=(Periodic("verify_chains", _verify, "verify_interval", "Verify the audit chains and their signed checkpoints."),),
    description="Audit-chain integrity, staff accounts reading many tenants, privacy requests at risk.",
)


def observe(kernel: Any, record: AuditRecord, *, now: float | None = None) -> Trigger | None:
    """Fold one audit entry into the windows; queue (and return) a trigger when it crosses a threshold. Never waits."""
    runner = runner_of(kernel, AGENT)
    if runner is None or runner.stopping:
        return None
    settings: AuditAgentSettings = settings_of(kernel, AGENT)  # type: ignore[assignment]
    now = time.monotonic() if now is None else now
    trigger: Trigger | None = None
    details = record.details or {}
    if record.action in settings.access_actions and record.actor_id and record.actor_kind == "user":
        tenant = details.get("tenant_id")
        if not tenant:
            return None
        watch_of(kernel).reads_seen += 1
        window = settings.access_window
        key = ("reads", record.actor_id)
        reads = runner.windows.hit(key, now, window, value=str(tenant))
        tenants = runner.windows.distinct(key, now, window)
        level = "revoke" if tenants >= settings.access_revoke_tenants else "alert" if tenants >= settings.access_tenants else None
        if level and runner.windows.fire_once((*key, level), now, window):
            trigger = Trigger(
                "irregular_access",
                record.actor_id,
                {"tenants": tenants, "reads": reads, "window_s": window},
                tenant_id=record.tenant_id,
                user_id=record.actor_id,
            )
    elif record.action in (DEADLINE_NEAR, OVERDUE) and record.target:
        overdue = record.action == OVERDUE
        trigger = Trigger(
            "privacy_deadline",
            record.target,
            {
                "request_kind": str(details.get("kind", "")),
                "overdue": overdue,
                "days_left": 0 if overdue else int(details.get("days_left", 0)),
            },
            tenant_id=record.tenant_id,
        )
    if trigger is not None:
        runner.submit(trigger)
    return trigger


def verification_due(kernel: Any) -> Trigger | None:
    """Queue a chain verification (the schedule's tick); the worker verifies as the department's principal."""
    runner = runner_of(kernel, AGENT)
    if runner is None or runner.stopping:
        return None
    trigger = Trigger("chain_verification", "audit_chains", {"at": datetime.now(UTC).isoformat(timespec="seconds")})
    return trigger if runner.submit(trigger) else None
