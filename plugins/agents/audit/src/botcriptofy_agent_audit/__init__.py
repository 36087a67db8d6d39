"""BotCriptoFy audit agent: scheduled audit-chain verification, irregular staff access, privacy deadlines at risk.

Hook implementations only; the agent is in ``_agent``. It runs on the agents runtime
(``botcriptofy_agents``) as the audit department's service principal. See README.md.
"""

from __future__ import annotations

from pathlib import Path

from botcriptofy import AuditRecord, Kernel, Schedule, ScheduledRun, SettingsSchema, StaffCommand, hookimpl
from botcriptofy_agents import Agent, start_agent, stop_agent

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
    from botcriptofy_agents import Ticker

    from ._agent import TICKER

    start_agent(kernel, AGENT)
    if not kernel.has_workflow_engine():
        ticker = Ticker(kernel, kernel.settings_for(AGENT.name).verify_interval, verification_due, "agent_audit.verify")
        kernel.stash[TICKER] = ticker
        ticker.start()


@hookimpl
async def shutdown(kernel: Kernel) -> None:
    from ._agent import TICKER

    ticker = kernel.stash.get(TICKER, None)
    if ticker is not None:
        await ticker.stop()
        del kernel.stash[TICKER]
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
    """With a workflow engine, verification is a schedule (once per tick across workers); without one, the plugin's own loop."""
    if not kernel.has_workflow_engine():
        return []

    async def verify(run: ScheduledRun) -> dict[str, bool]:
        return {"queued": verification_due(kernel.current()) is not None}

    interval = kernel.settings_for(AGENT.name).verify_interval
    return [Schedule("verify_chains", verify, interval=interval, description="Verify the audit chains and their signed checkpoints.")]


@hookimpl
def register_staff_commands(kernel: Kernel) -> list[StaffCommand]:
    from ._commands import COMMANDS

    return list(COMMANDS)
