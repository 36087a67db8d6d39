"""What an agent declares: its decision model, rules, context, prompt, actions and settings."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from botcriptofy import Actor, PluginSettings

Severity = Literal["info", "warning", "high", "critical"]
PROVIDERS = ("rules", "ollama")

# Why the rules decided instead of the model.
FALLBACK_REASONS = ("unreachable", "timeout", "invalid_json", "schema_invalid", "outside_policy", "no_provider", "no_consent")


class Parameters(BaseModel):
    """What an action needs beyond the trigger: a closed, short object (a free-form one lets a small model ramble)."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field("", max_length=64, description="What the action is about, when it differs from the trigger's subject.")
    note: str = Field("", max_length=80, description="A short note for the people who receive or approve the action.")


class Decision(BaseModel):
    """The base of every agent's decision: an action from a closed set, severity, confidence, rationale, parameters.

    Agents derive theirs with :func:`decision_model`, which closes ``action`` to the agent's actions.
    """

    model_config = ConfigDict(extra="forbid")

    action: str
    severity: Severity
    confidence: float = Field(ge=0, le=1)
    rationale: str = Field(max_length=80)
    parameters: Parameters = Field(default_factory=Parameters)


def decision_model(name: str, actions: tuple[str, ...]) -> type[Decision]:
    """A :class:`Decision` subclass whose ``action`` is one of ``actions`` (``none`` always included)."""
    closed = tuple(dict.fromkeys(("none", *actions)))
    return create_model(name, __base__=Decision, action=(Literal[closed], ...))  # type: ignore[call-overload,no-any-return]


# What the model is asked for is bounded tighter than what the decision model accepts (rules may
# write up to 80 characters): every string at most ANSWER_STRING_MAX characters (a few words), a confidence in
# tenths. The grammar made from the schema then cannot produce an answer the decision model refuses,
# and a small model's answer stays short (each generated token costs tens of milliseconds on a CPU).
ANSWER_STRING_MAX = 32
# Free text the model writes: plain printable ASCII, no quotes, backslashes or line breaks. Some
# JSON-schema grammar converters let a string hold raw control characters (llama-cpp-python's:
# ``[^"\\]``), which is invalid JSON; a pattern closes that on every converter.
ANSWER_TEXT_CHARS = "A-Za-z0-9 ,.;:!?%'()/+-"
CONFIDENCE_STEPS = tuple(i / 10 for i in range(11))
# A token is at least one byte; a schema character is at most 6 bytes (``\\u`` and four hex digits).
_BYTES_PER_CHAR = 6
_UNBOUNDED_NUMBER = 40  # "-" + 16 integral digits + "." + 16 decimals + exponent: the grammar's longest number


def _bound_strings(node: Any) -> Any:
    """``node`` without titles and descriptions, every free string capped at ``ANSWER_STRING_MAX`` characters."""
    if isinstance(node, list):
        return [_bound_strings(item) for item in node]
    if not isinstance(node, dict):
        return node
    bounded = {key: _bound_strings(value) for key, value in node.items() if key not in ("title", "description")}
    if bounded.get("type") == "string" and not {"enum", "const", "pattern", "format"} & bounded.keys():
        length = min(int(bounded.get("maxLength", ANSWER_STRING_MAX)), ANSWER_STRING_MAX)
        bounded["maxLength"] = length
        bounded["pattern"] = f"^[{ANSWER_TEXT_CHARS}]{{0,{length}}}$"
    return bounded


@functools.cache
def answer_schema(decision: type[Decision], *, parameters: bool = False) -> dict[str, Any]:
    """The JSON schema the model answers in (``format``): ``decision``'s schema, bounded for generation.

    Every free string is capped at :data:`ANSWER_STRING_MAX` characters of :data:`ANSWER_TEXT_CHARS`
    (a pattern: no control character can reach the JSON), ``confidence`` is one of
    :data:`CONFIDENCE_STEPS` (a JSON-schema grammar bounds no number: ``1.5`` or 30 digits would
    otherwise be possible), titles and descriptions are left out (the prompt says what is wanted),
    and ``parameters`` is asked for only when ``parameters`` is true. Every answer valid against it
    is valid against ``decision``. Computed once per decision model; do not mutate the result.
    """
    schema = _bound_strings(copy.deepcopy(decision.model_json_schema()))
    properties = schema.get("properties", {})
    if "confidence" in properties:
        properties["confidence"] = {"type": "number", "enum": list(CONFIDENCE_STEPS)}
    if not parameters and "parameters" in properties:
        del properties["parameters"]
        schema["required"] = [name for name in schema.get("required", []) if name != "parameters"]
        if "Parameters" in schema.get("$defs", {}) and '"#/$defs/Parameters"' not in json.dumps(properties):
            del schema["$defs"]["Parameters"]
            if not schema["$defs"]:
                del schema["$defs"]
    return schema  # type: ignore[no-any-return]


def answer_token_bound(schema: Mapping[str, Any]) -> int:
    """Tokens the longest answer valid against ``schema`` can take (a token is at least one byte), plus the end.

    The ``num_predict`` the model is given by default: larger than any valid answer, so no valid
    answer is ever cut (a cut answer is invalid JSON), and still bounded. Raises ``ValueError`` for
    a schema part with no bound (an array without ``maxItems``, a string without ``maxLength``).
    """
    defs = schema.get("$defs", {})

    def size(node: Mapping[str, Any]) -> int:
        if "$ref" in node:
            return size(defs[str(node["$ref"]).rsplit("/", 1)[-1]])
        if "enum" in node or "const" in node:
            values = node.get("enum", [node.get("const")])
            return max(len(json.dumps(value)) for value in values) + 1
        if "anyOf" in node:
            return max(size(option) for option in node["anyOf"])
        kind = node.get("type")
        if kind == "object":
            members = node.get("properties", {})
            return 2 + sum(len(json.dumps(name)) + 3 + size(member) for name, member in members.items())
        if kind == "string":
            if "maxLength" not in node:
                raise ValueError("a string without maxLength has no bounded answer")
            return 3 + _BYTES_PER_CHAR * int(node["maxLength"])
        if kind in ("number", "integer"):
            return _UNBOUNDED_NUMBER
        if kind in ("boolean", "null"):
            return 6
        if kind == "array" and "maxItems" in node:
            return 3 + int(node["maxItems"]) * (size(node.get("items", {})) + 2)
        raise ValueError(f"no bounded answer for {node!r}")

    return size(schema) + 4  # the end-of-sequence token, and a margin for a tokenizer's special prefix


@dataclass(frozen=True)
class Trigger:
    """Why the agent decides: a window crossing a threshold, a single event, or a schedule tick.

    ``subject`` is a pseudonymous id (a user id, an address digest, a check name), never an e-mail.
    """

    kind: str
    subject: str
    data: Mapping[str, Any] = field(default_factory=dict)
    tenant_id: str | None = None
    user_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "data": dict(self.data), "tenant_id": self.tenant_id, "user_id": self.user_id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trigger:
        return cls(
            kind=str(data["kind"]),
            subject=str(data.get("subject", "")),
            data=dict(data.get("data") or {}),
            tenant_id=data.get("tenant_id"),
            user_id=data.get("user_id"),
        )


class AgentSettings(PluginSettings):
    """Settings every agent has (its own section, ``[default.agent_<name>]``); agents add their thresholds."""

    provider: Literal["rules", "ollama"] = Field("rules", description="Who decides: the deterministic rules, or a model through Ollama.")
    model: str = Field("qwen3:0.6b", description="The Ollama model.")
    host: str = Field("http://127.0.0.1:11434", description="The Ollama server.")
    timeout: float = Field(1.5, gt=0, le=60, description="Seconds the model may take before the rules decide.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")
    shadow: bool = Field(False, description="Decide and record, never act.")
    allowed_actions: tuple[str, ...] = Field(default=(), description="Actions the agent may take; anything else is refused.")
    approval_actions: tuple[str, ...] = Field(default=(), description="Actions that wait for a person's approval.")
    max_actions_per_hour: int = Field(30, ge=0, description="Actions (executed or proposed for approval) per rolling hour.")
    approval_expires_in: float = Field(24 * 3600, gt=0, description="Seconds an approval request waits before it expires.")
    notify: str = Field("", description="Notification address of the department (default: department:<department>).")
    consent_purpose: str = Field("ai_insights", description="Consent purpose a tenant's data needs before it reaches a model.")


# Keys every agent changes live (no restart).
LIVE_KEYS = frozenset(
    {
        "provider",
        "model",
        "host",
        "timeout",
        "temperature",
        "shadow",
        "allowed_actions",
        "approval_actions",
        "max_actions_per_hour",
        "approval_expires_in",
        "notify",
        "consent_purpose",
    }
)


@dataclass(frozen=True)
class ActionRequest:
    """What an approval-gated action asks for: the kernel action that runs once a person approves."""

    action: str
    permission: str
    summary: str
    payload: Mapping[str, Any]
    destructive: bool = True
    tenant_id: str | None = None


Gather = Callable[[Any, Actor, Trigger], Awaitable[dict[str, Any]]]
Rules = Callable[[Trigger, Mapping[str, Any], Any], Decision]
Execute = Callable[[Any, Actor, Trigger, Decision], Awaitable[dict[str, Any]]]
Propose = Callable[[Any, Trigger, Decision], ActionRequest]


@dataclass(frozen=True)
class ActionSpec:
    """An action the agent can take: run now (``execute``) or propose for approval (``propose``)."""

    name: str
    execute: Execute | None = None
    propose: Propose | None = None


@dataclass(frozen=True)
class Periodic:
    """A job an agent runs every ``interval`` seconds, ``interval`` naming a setting of the agent's own.

    With a workflow engine it is the schedule ``name`` (once per tick across workers and hosts, see
    :func:`agent_schedules`); without one, every worker ticks it with a :class:`Ticker` started and
    stopped with the agent (``immediately``: once at start too). ``run(kernel)`` returns what the
    schedule records.
    """

    name: str
    run: Callable[[Any], Awaitable[Any]]
    interval: str
    description: str
    immediately: bool = False


@dataclass(frozen=True)
class Agent:
    """One department agent, as its plugin declares it to the runtime (``register_agents``).

    ``ask_parameters``: whether the model is asked for ``parameters`` too (off by default: no shipped
    action reads them, and a small model spends some twenty tokens on them in every answer).
    ``periodic``: the agent's own checks on a clock (:class:`Periodic`).
    ``prompt_context``: per trigger kind, the context keys the model is shown (a kind not listed: every
    key). Every prompt token costs the model time before it answers; the rules and the record's digest
    always get the whole context.
    """

    name: str
    department: str
    decision: type[Decision]
    rules: Rules
    gather: Gather
    actions: Mapping[str, ActionSpec]
    instructions: str
    prompt_version: str = "1"
    description: str = ""
    ask_parameters: bool = False
    periodic: tuple[Periodic, ...] = ()
    prompt_context: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON schema the model answers in (:func:`answer_schema`; ``parameters`` only with ``ask_parameters``)."""
        return answer_schema(self.decision, parameters=self.ask_parameters)
