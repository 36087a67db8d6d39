"""BotCriptoFy agents runtime: the shared machinery of the department agents.

Model providers (``ollama`` through the official client, ``rules``), decision models, policy
(allowed actions, approvals, hourly cap, shadow mode), fallback to the rules with the reason
recorded, windows over events, decision records with ``GET /v1/agents`` and
``GET /v1/agents/decisions``, metrics, and ``botcriptofy agents eval``. Each agent is its own
plugin that imports this package's public API. See docs/agents.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from starlette.routing import BaseRoute

from botcriptofy import Envelope, EventHandler, Kernel, Migrations, PluginSettings, SettingsSchema, hookimpl

from ._engine import Outcome, decide, digest, messages
from ._eval import Case, Report, evaluate, load_cases
from ._providers import AgentHookSpecs, ModelProvider, OllamaProvider
from ._routes import read_decisions
from ._runner import (
    Runner,
    Windows,
    agent_schedules,
    handle,
    notify,
    notify_address,
    registered_agents,
    runner_of,
    settings_of,
    start_agent,
    stop_agent,
)
from ._spec import (
    ANSWER_STRING_MAX,
    ANSWER_TEXT_CHARS,
    CONFIDENCE_STEPS,
    FALLBACK_REASONS,
    LIVE_KEYS,
    ActionRequest,
    ActionSpec,
    Agent,
    AgentSettings,
    Decision,
    Periodic,
    Trigger,
    answer_schema,
    answer_token_bound,
    decision_model,
)
from ._ticker import Ticker

__all__ = [
    "ANSWER_STRING_MAX",
    "ANSWER_TEXT_CHARS",
    "CONFIDENCE_STEPS",
    "FALLBACK_REASONS",
    "LIVE_KEYS",
    "ActionRequest",
    "ActionSpec",
    "Agent",
    "AgentSettings",
    "AgentsSettings",
    "Case",
    "Decision",
    "ModelProvider",
    "OllamaProvider",
    "Outcome",
    "Periodic",
    "Report",
    "Runner",
    "Ticker",
    "Trigger",
    "Windows",
    "agent_schedules",
    "agent_settings_schema",
    "agents_model_provider",
    "answer_schema",
    "answer_token_bound",
    "decide",
    "decision_model",
    "digest",
    "evaluate",
    "handle",
    "load_cases",
    "messages",
    "notify",
    "notify_address",
    "plugin_settings_schema",
    "read_decisions",
    "register_commands",
    "register_event_handlers",
    "register_hookspecs",
    "register_metrics",
    "register_migrations",
    "register_routes",
    "registered_agents",
    "runner_of",
    "settings_of",
    "shutdown",
    "start_agent",
    "startup",
    "stop_agent",
]

MIGRATIONS = Path(__file__).parent / "migrations"


class AgentsSettings(PluginSettings):
    """The ``[agents]`` section: what the runtime shares; each agent has its own section."""

    max_tokens: int | None = Field(
        None,
        ge=32,
        le=4096,
        description="Most tokens a model may answer with; unset: the longest answer valid against the decision's schema, so none is cut.",
    )
    keep_alive: str | float = Field("30m", description="How long Ollama keeps the model loaded after a decision (Ollama's keep_alive).")
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="More Ollama options (num_thread, num_ctx...); temperature and num_predict are the runtime's."
    )


def agent_settings_schema(model: type[AgentSettings], live: frozenset[str] = frozenset()) -> SettingsSchema:
    """The settings schema of an agent plugin: its model, every common key live, plus ``live``."""
    return SettingsSchema(model=model, live=LIVE_KEYS | live)


@hookimpl
def register_hookspecs() -> list[Any]:
    return [AgentHookSpecs]


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SettingsSchema(model=AgentsSettings, live=frozenset({"max_tokens", "keep_alive", "options"}))


def _configure(provider: OllamaProvider, settings: AgentsSettings) -> None:
    provider.max_tokens = settings.max_tokens
    provider.keep_alive = settings.keep_alive
    provider.options = dict(settings.options)


@hookimpl
def startup(kernel: Kernel) -> None:
    from ._runner import RUNTIME, RuntimeState

    state = RuntimeState()
    _configure(state.ollama, kernel.settings_for("agents"))
    kernel.stash[RUNTIME] = state


@hookimpl
def settings_changed(kernel: Kernel, previous: Any, current: Any, changed: frozenset[str]) -> None:
    from ._runner import RUNTIME

    state = kernel.stash.get(RUNTIME, None)
    if state is not None:
        _configure(state.ollama, current)


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    from ._runner import RUNTIME

    state = kernel.stash.get(RUNTIME, None)
    if state is not None:
        await state.ollama.close()


@hookimpl
def agents_model_provider(kernel: Kernel, name: str) -> ModelProvider | None:
    from ._runner import RUNTIME

    state = kernel.stash.get(RUNTIME, None)
    if name == "ollama" and state is not None:
        return state.ollama
    return None


@hookimpl
def register_migrations(kernel: Kernel) -> Migrations:
    from ._models import metadata

    return Migrations(directory=MIGRATIONS, metadata=metadata)


@hookimpl
def register_routes(kernel: Kernel) -> list[BaseRoute]:
    from ._routes import routes

    return routes()


@hookimpl
def register_metrics(kernel: Kernel) -> list[Any]:
    from ._runner import RUNTIME

    state = kernel.stash.get(RUNTIME, None)
    return state.metrics.collectors() if state is not None else []


@hookimpl
def register_event_handlers(kernel: Kernel) -> list[EventHandler]:
    from ._runner import approval_outcome

    async def outcome(envelope: Envelope) -> None:
        await approval_outcome(kernel.current(), envelope.payload)

    return [EventHandler("agents.approval-outcomes", outcome, events=("approvals.outcome",))]


@hookimpl
def register_commands(cli: Any) -> None:
    from ._cli import agents

    if "agents" not in cli.commands:
        cli.add_command(agents)
