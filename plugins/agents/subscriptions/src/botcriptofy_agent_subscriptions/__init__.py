"""BotCriptoFy subscriptions agent: churn over 30 days, quotas at 80 and 100 %, trials ending, past-due accounts.

Hook implementations only; the agent is in ``_agent``. It runs on the agents runtime
(``botcriptofy_agents``) as the subscriptions department's service principal and reads billing's figures
through events and the kernel's ``business_metrics`` hook, never by importing billing. See README.md.
"""

from __future__ import annotations

from pathlib import Path

from botcriptofy import Envelope, EventHandler, Kernel, Schedule, SettingsSchema, StaffCommand, hookimpl
from botcriptofy_agents import Agent, agent_schedules, start_agent, stop_agent

from ._agent import AGENT, SubscriptionsDecision, check_once, observe, rules
from ._settings import SCHEMA, SubscriptionsSettings

__all__ = [
    "AGENT",
    "CASES",
    "SubscriptionsDecision",
    "SubscriptionsSettings",
    "check_once",
    "observe",
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
    start_agent(kernel, AGENT)


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    await stop_agent(kernel, AGENT)


@hookimpl(optionalhook=True)
def register_agents(kernel: Kernel) -> list[Agent]:
    return [AGENT]


@hookimpl
def register_event_handlers(kernel: Kernel) -> list[EventHandler]:
    def handle(envelope: Envelope) -> None:
        observe(kernel.current(), envelope)

    from ._agent import EVENTS

    return [EventHandler("agent_subscriptions.events", handle, events=EVENTS, detached=True)]


@hookimpl
def register_schedules(kernel: Kernel) -> list[Schedule]:
    """With a workflow engine, churn is checked on a schedule (once per tick across workers); without one, by the runtime's ticker."""
    return agent_schedules(kernel, AGENT)


@hookimpl
def register_staff_commands(kernel: Kernel) -> list[StaffCommand]:
    from ._commands import COMMANDS

    return list(COMMANDS)
