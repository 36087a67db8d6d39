"""Deciding: the model through its provider, validated against the agent's decision model, else the rules.

:func:`decide` never raises for the model's failures: each one is a fallback to the rules with its
reason. It touches no database (the evaluation command calls it with supplied contexts).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ._spec import Agent, AgentSettings, Decision, Trigger


@dataclass(frozen=True)
class Outcome:
    """One decision as decided: what, by whom (``source`` model or rules), why the rules took over, how long it took."""

    decision: Decision
    source: str
    reason: str | None
    raw: str | None
    latency_ms: float
    provider: str
    model: str | None


def digest(context: Mapping[str, Any]) -> str:
    """SHA-256 of the context as canonical JSON: what the record keeps instead of the context itself."""
    return hashlib.sha256(json.dumps(context, sort_keys=True, default=str, separators=(",", ":")).encode()).hexdigest()


@functools.lru_cache(maxsize=256)
def _system(department: str, instructions: str, actions: tuple[str, ...]) -> str:
    return (
        f"{department.capitalize()} agent of a crypto-trading platform. {instructions} "
        f"Actions: {', '.join(('none', *actions))}. Answer in JSON: action, severity, confidence, rationale (a few words)."
    )


def messages(agent: Agent, settings: AgentSettings, trigger: Trigger, context: Mapping[str, Any]) -> list[dict[str, str]]:
    """The prompt: a short system message (department, instructions, allowed actions), then the trigger and context as compact JSON.

    The system message is the same for every decision of an agent under one policy, so a server that
    reuses the prompt's cached prefix (Ollama does) evaluates only the user message.
    """
    system = _system(agent.department, agent.instructions, tuple(settings.allowed_actions))
    user = json.dumps(
        {"trigger": {"kind": trigger.kind, "data": dict(trigger.data)}, "context": dict(context)}, default=str, separators=(",", ":")
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


async def decide(
    kernel: Any, agent: Agent, settings: AgentSettings, trigger: Trigger, context: Mapping[str, Any], *, consent: bool = True
) -> Outcome:
    """Decide on ``trigger``: the configured provider, falling back to the rules with the reason recorded."""
    started = time.perf_counter()

    def rules(reason: str | None, raw: str | None = None) -> Outcome:
        decision = agent.rules(trigger, context, settings)
        return Outcome(decision, "rules", reason, raw, (time.perf_counter() - started) * 1000, settings.provider, model)

    model = settings.model if settings.provider != "rules" else None
    if settings.provider == "rules":
        return rules(None)
    if not consent:
        return rules("no_consent")
    hook = getattr(kernel.hook, "agents_model_provider", None) if kernel is not None else None
    provider = hook(kernel=kernel, name=settings.provider) if hook is not None else None
    if provider is None:
        return rules("no_provider")
    raw: str | None = None
    try:
        async with asyncio.timeout(settings.timeout):
            raw = await provider.complete(
                host=settings.host,
                model=settings.model,
                messages=messages(agent, settings, trigger, context),
                schema=agent.schema,
                temperature=settings.temperature,
            )
    except TimeoutError:
        return rules("timeout")
    except Exception as error:
        return rules("unreachable", raw=f"{type(error).__name__}: {error}"[:500])
    try:
        parsed = json.loads(raw)
    except ValueError:
        return rules("invalid_json", raw)
    try:
        decision = agent.decision.model_validate(parsed)
    except ValidationError:
        return rules("schema_invalid", raw)
    if decision.action != "none" and decision.action not in settings.allowed_actions:
        return rules("outside_policy", raw)
    return Outcome(decision, "model", None, raw, (time.perf_counter() - started) * 1000, settings.provider, model)
