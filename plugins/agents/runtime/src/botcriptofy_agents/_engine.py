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


# The user message's layout; recorded with each decision next to the agent's own prompt version ("<agent>/<layout>").
PROMPT_LAYOUT = "l2"


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str) and value and not any(c in value for c in " =\n\"") and value == value.strip():
        return value
    return json.dumps(value, default=str, separators=(",", ":"))


def _pairs(values: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={_value(value)}" for key, value in values.items())


def prompt_version(agent: Agent) -> str:
    """What a decision record keeps as its prompt version: the agent's instructions and the runtime's layout."""
    return f"{agent.prompt_version}/{PROMPT_LAYOUT}"


def messages(agent: Agent, settings: AgentSettings, trigger: Trigger, context: Mapping[str, Any]) -> list[dict[str, str]]:
    """The prompt: a short system message (department, instructions, allowed actions), then the trigger and context.

    The system message is the same for every decision of an agent under one policy, so a server that
    reuses the prompt's cached prefix (Ollama does) evaluates only the user message. That message is
    two lines of ``key=value`` pairs (``trigger <kind>: ...`` and ``context: ...``; a value that is not
    a plain word or number is JSON): about 30 % fewer tokens than the same data as JSON, and every
    prompt token is evaluated on the model's side before the first answer token.
    """
    system = _system(agent.department, agent.instructions, tuple(settings.allowed_actions))
    shown = agent.prompt_context.get(trigger.kind)
    if shown is not None:
        context = {key: context[key] for key in shown if key in context}
    user = f"trigger {_value(trigger.kind)}: {_pairs(trigger.data)}\ncontext: {_pairs(context)}"
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
