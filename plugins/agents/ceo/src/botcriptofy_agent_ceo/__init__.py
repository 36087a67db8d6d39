"""BotCriptoFy CEO agent: a daily executive summary from the business KPIs and the other agents' decisions, and alerts.

Hook implementations only; the agent is in ``_agent``. It runs on the agents runtime
(``botcriptofy_agents``) as the ceo department's service principal and reads the business figures
through the kernel's ``business_metrics`` hook, whichever plugins answer it. See README.md.
"""

from __future__ import annotations

from pathlib import Path

from botcriptofy import ApprovalAction, ApprovalRequest, Kernel, Schedule, ScheduledRun, SettingsSchema, StaffCommand, hookimpl
from botcriptofy_agents import Agent, agent_schedules, start_agent, stop_agent

from ._agent import AGENT, DISTRIBUTE, CeoDecision, build_summary, indicators, look, rules, summary_due
from ._settings import SCHEMA, CeoSettings

__all__ = [
    "AGENT",
    "CASES",
    "DISTRIBUTE",
    "CeoDecision",
    "CeoSettings",
    "build_summary",
    "indicators",
    "look",
    "plugin_settings_schema",
    "register_agents",
    "register_approval_actions",
    "register_schedules",
    "register_staff_commands",
    "rules",
    "shutdown",
    "startup",
    "summary_due",
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
def register_schedules(kernel: Kernel) -> list[Schedule]:
    """The daily summary (08:00 São Paulo by default) and the periodic look at KPIs and decisions, on the workflow engine."""
    if not kernel.has_workflow_engine():
        return []
    settings = kernel.settings_for(AGENT.name)

    async def summary(run: ScheduledRun) -> dict[str, bool]:
        return {"queued": summary_due(kernel.current(), run.scheduled_at) is not None}

    return [
        Schedule(
            "daily_summary",
            summary,
            cron=settings.summary_cron,
            time_zone=settings.summary_time_zone,
            description="The CEO's daily executive summary.",
        ),
        *agent_schedules(kernel, AGENT),
    ]


@hookimpl
def register_approval_actions(kernel: Kernel) -> list[ApprovalAction]:
    from ._agent import distribute

    async def execute(approval: ApprovalRequest) -> dict[str, object]:
        return await distribute(kernel.current(), approval)

    return [ApprovalAction(DISTRIBUTE, execute, "Send the executive summary to the board and the ceo department.")]


@hookimpl
def register_staff_commands(kernel: Kernel) -> list[StaffCommand]:
    from ._commands import COMMANDS

    return list(COMMANDS)
