"""BotCriptoFy audit agent: scheduled audit-chain verification, irregular staff access, privacy deadlines at risk.

Hook implementations only; the agent is in ``_agent``. It runs on the agents runtime
(``botcriptofy_agents``) as the audit department's service principal. See README.md.
"""

from __future__ import annotations

from pathlib import Path

from botcriptofy import AuditRecord, Kernel, Schedule, SettingsSchema, StaffCommand, hookimpl
from botcriptofy_agents import Agent, agent_schedules, start_agent, stop_agent

from ._agent import AGENT, AuditDecision, observe, rules, verification_due, verify_chains
from ._settings import SCHEMA, AuditAgentSettings

__all__ = [
    "AGENT",
    "CASES",
    "AuditAgentSettings",
    "AuditDecision",
    "observe",
    "plugin_settings_schema",
    "record_audit",
    "register_agents",
    "register_schedules",
    "register_staff_commands",
    "rules",
    "shutdown",
    "startup",
    "verification_due",
    "verify_chains",
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
def record_audit(kernel: Kernel, record: AuditRecord) -> None:
    """Watch the entries as they are recorded: reads of tenants' data by staff, privacy deadlines (window updates only)."""
    observe(kernel.current(), record)


@hookimpl
def register_schedules(kernel: Kernel) -> list[Schedule]:
    """With a workflow engine, verification is a schedule (once per tick across workers); without one, the runtime's ticker."""
    return agent_schedules(kernel, AGENT)


@hookimpl
def register_staff_commands(kernel: Kernel) -> list[StaffCommand]:
    from ._commands import COMMANDS

    return list(COMMANDS)
