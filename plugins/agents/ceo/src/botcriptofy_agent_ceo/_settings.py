"""The ``[agent_ceo]`` section: the common agent keys plus the summary schedule and the KPI thresholds."""

from __future__ import annotations

from pydantic import Field, field_validator

from botcriptofy_agents import AgentSettings, agent_settings_schema

ACTIONS = ("send_summary", "alert", "distribute_report")


class CeoSettings(AgentSettings):
    allowed_actions: tuple[str, ...] = Field(default=ACTIONS, description="Actions the agent may take.")
    approval_actions: tuple[str, ...] = Field(default=("distribute_report",), description="Actions that wait for approval.")
    summary_cron: str = Field("0 8 * * *", description="When the daily executive summary runs (five-field cron; not live).")
    summary_time_zone: str = Field("America/Sao_Paulo", description="Time zone of summary_cron (not live).")
    watch_interval: float = Field(900.0, ge=1, description="Seconds between looks at the KPIs and the other agents' decisions (not live).")
    failed_payment_rate: float = Field(0.05, gt=0, le=1, description="Share of failed payments in 24 h above which the CEO is alerted.")
    min_payments: int = Field(10, ge=1, description="Payment attempts in 24 h below which the failure share is not judged.")
    churn_rate: float = Field(0.15, gt=0, le=1, description="Share of subscriptions cancelled in 30 days above which the CEO is alerted.")
    min_subscriptions: int = Field(10, ge=1, description="Subscriptions (active + cancelled in 30 days) below which churn is not judged.")
    high_decisions: int = Field(5, ge=1, description="High-severity decisions of other agents since the last look that alert.")
    board_recipient: str = Field(
        "", description="Where the summary is also distributed once a CEO manager approves (e.g. email:board@...); empty: no distribution."
    )

    @field_validator("summary_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("summary_cron must have five fields (minute hour day month weekday)")
        return value


SCHEMA = agent_settings_schema(
    CeoSettings,
    live=frozenset({"failed_payment_rate", "min_payments", "churn_rate", "min_subscriptions", "high_decisions", "board_recipient"}),
)
