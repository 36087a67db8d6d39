"""BotCriptoFy security agent: failed logins, lockouts, rate-limit refusals, new addresses, unusual activity.

Hook implementations only; the agent (rules, context, actions, windows) is in ``_agent``. It runs on
the agents runtime (``botcriptofy_agents``) as the security department's service principal. See README.md.
"""

from __future__ import annotations

import time
from pathlib import Path

from botcriptofy import Envelope, EventHandler, Kernel, SettingsSchema, StaffCommand, hookimpl
from botcriptofy_agents import Agent, runner_of, start_agent, stop_agent

from ._agent import AGENT, SecurityDecision, rules
from ._settings import SCHEMA, SecuritySettings

__all__ = [
    "AGENT",
    "CASES",
    "SecurityDecision",
    "SecuritySettings",
    "plugin_settings_schema",
    "register_agents",
    "register_event_handlers",
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
    from ._agent import observe, subscribed

    def handle(envelope: Envelope) -> None:
        """The publisher pays one append: the window update runs right after, on the loop (``Runner.defer``)."""
        current = kernel.current()
        runner = runner_of(current, AGENT)
        if runner is not None:
            runner.defer(observe, current, envelope, time.monotonic())

    return [EventHandler("agent_security.events", handle, events=subscribed(kernel.settings_for(AGENT.name)), detached=True)]


@hookimpl
def register_staff_commands(kernel: Kernel) -> list[StaffCommand]:
    from ._commands import COMMANDS

    return list(COMMANDS)
