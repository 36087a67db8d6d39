"""``GET /v1/agents`` and ``GET /v1/agents/decisions``: department-scoped, never a department the caller cannot read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.routing import BaseRoute

from botcriptofy import Actor, ProblemError, Route, kernel_of, require

from . import _store
from ._runner import registered_agents, runner_of, settings_of
from ._spec import Agent


class AgentOut(BaseModel):
    name: str
    department: str
    description: str
    running: bool
    provider: str
    model: str | None
    timeout: float
    shadow: bool
    allowed_actions: list[str]
    approval_actions: list[str]
    max_actions_per_hour: int
    queued: int
    counters_24h: dict[str, int]


class DecisionQuery(BaseModel):
    agent: str | None = Field(None, max_length=64)
    action: str | None = Field(None, max_length=64)
    outcome: str | None = Field(None, max_length=32)
    subject: str | None = Field(None, max_length=128)
    limit: int = Field(50, ge=1, le=500)


class DecisionOut(BaseModel):
    id: str
    agent: str
    department: str
    trigger_kind: str
    subject: str
    trigger: dict[str, Any]
    context_digest: str
    provider: str
    model: str | None
    prompt_version: str
    raw_output: str | None
    decision: dict[str, Any]
    action: str
    source: str
    fallback_reason: str | None
    latency_ms: float
    outcome: str
    outcome_detail: Any
    approval_id: str | None
    shadow: bool
    created_at: datetime
    updated_at: datetime


# Reading every department's decision records (and nothing else of those departments): the ceo department's grant.
READ_ALL = "agents:read"


def may_read(actor: Actor, department: str) -> bool:
    """Whether ``actor`` may read ``department``'s decisions: ``<department>:read``, or ``agents:read`` for every department."""
    return actor.can(f"{department}:read") or actor.can(READ_ALL)


def readable_departments(actor: Actor, agents: list[Agent]) -> list[str]:
    return sorted({a.department for a in agents if may_read(actor, a.department)})


async def read_decisions(kernel: Any, actor: Actor, *, department: str, **filters: Any) -> list[dict[str, Any]]:
    """Decisions of one department, for ``actor`` holding ``<department>:read`` or ``agents:read`` (403 otherwise)."""
    if not may_read(actor, department):
        raise ProblemError(403, "Forbidden", f"Reading the {department} department's decisions needs '{department}:read'.")
    return await _store.listing(kernel, departments=[department], **filters)


async def list_agents(request: Request) -> list[AgentOut]:
    """Each agent of a department the caller can read: its state, provider and counters of the last 24 hours."""
    actor = await require(request)
    kernel = kernel_of(request)
    found = []
    for agent in registered_agents(kernel):
        if not may_read(actor, agent.department):
            continue
        settings = settings_of(kernel, agent)
        runner = runner_of(kernel, agent)
        found.append(
            AgentOut(
                name=agent.name,
                department=agent.department,
                description=agent.description,
                running=runner is not None and not runner.stopping,
                provider=settings.provider,
                model=settings.model if settings.provider != "rules" else None,
                timeout=settings.timeout,
                shadow=settings.shadow,
                allowed_actions=list(settings.allowed_actions),
                approval_actions=list(settings.approval_actions),
                max_actions_per_hour=settings.max_actions_per_hour,
                queued=runner.queue.qsize() if runner is not None else 0,
                counters_24h=await _store.counters(kernel, agent.name),
            )
        )
    return found


async def list_decisions(request: Request, query: DecisionQuery) -> list[DecisionOut]:
    """Decisions, newest first, of the departments the caller can read (403 for an agent of another department)."""
    actor = await require(request)
    kernel = kernel_of(request)
    agents = registered_agents(kernel)
    departments = readable_departments(actor, agents)
    if query.agent is not None:
        match = next((a for a in agents if a.name == query.agent), None)
        if match is None:
            raise ProblemError(
                422,
                "Validation failed",
                f"There is no agent '{query.agent}'.",
                errors=[{"field": "agent", "message": "unknown agent", "in": "query"}],
            )
        if match.department not in departments:
            raise ProblemError(403, "Forbidden", f"Reading the {match.department} department's decisions needs '{match.department}:read'.")
        departments = [match.department]
    if not departments:
        raise ProblemError(403, "Forbidden", "Reading agent decisions needs '<department>:read' for some department with an agent.")
    rows = await _store.listing(
        kernel,
        departments=departments,
        agent=query.agent,
        action=query.action,
        outcome=query.outcome,
        subject=query.subject,
        limit=query.limit,
    )
    return [DecisionOut(**{k: row[k] for k in DecisionOut.model_fields}) for row in rows]


def routes() -> list[BaseRoute]:
    tags = ["agents"]
    problems = {401: "Unauthorized", 403: "Forbidden"}
    return [
        Route("/v1/agents", list_agents, response=list[AgentOut], authenticated=True, tags=tags, responses=problems),
        Route(
            "/v1/agents/decisions",
            list_decisions,
            query=DecisionQuery,
            response=list[DecisionOut],
            authenticated=True,
            tags=tags,
            responses={**problems, 422: "Unknown agent"},
        ),
    ]
