"""BotCriptoFy configuration agent: refused and rolled-back configurations, readiness failures, sustained CPU and memory.

Hook implementations only; the agent is in ``_agent``. It runs on the agents runtime
(``botcriptofy_agents``) as the configuration department's service principal. See README.md.
"""

from __future__ import annotations

from pathlib import Path

from botcriptofy import Envelope, EventHandler, Kernel, Schedule, SettingsSchema, StaffCommand, hookimpl
from botcriptofy_agents import Agent, agent_schedules, start_agent, stop_agent

from ._agent import AGENT, ConfigurationDecision, Sample, observe_sample, rules
from ._settings import SCHEMA, ConfigurationSettings

__all__ = [
    "AGENT",
    "CASES",
    "ConfigurationDecision",
    "ConfigurationSettings",
    "Sample",
    "observe_sample",
    "plugin_settings_schema",
    "register_agents",
    "register_event_handlers",
    "register_schedules",
    "register_staff_commands",
    "rules",
    "shutdown",
    "startup",
]

CASES = Path(__file__).parent / "cases.jsonl"


@hookimpl
def plugin_settings_schema() -> SettingsSchema:
    return SCHEMA


@hookimpl
def startup(kernel: Kernel) -> None:
    from ._agent import watch_of

    watch = watch_of(kernel)
    watch.version = watch.version or kernel.config_version
    start_agent(kernel, AGENT)


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    await stop_agent(kernel, AGENT)


@hookimpl(optionalhook=True)
def register_agents(kernel: Kernel) -> list[Agent]:
    return [AGENT]


@hookimpl
def register_event_handlers(kernel: Kernel) -> list[EventHandler]:
    from ._agent import observe

    def handle(envelope: Envelope) -> None:
        observe(kernel.current(), envelope)

    return [EventHandler("agent_configuration.events", handle, events=("kernel.config_applied",), detached=True)]


@hookimpl
def register_schedules(kernel: Kernel) -> list[Schedule]:
    """With a workflow engine, sampling is a schedule (once per tick across workers); without one, the runtime's ticker."""
    return agent_schedules(kernel, AGENT)


@hookimpl
def register_staff_commands(kernel: Kernel) -> list[StaffCommand]:
    from ._commands import COMMANDS

    return list(COMMANDS)
