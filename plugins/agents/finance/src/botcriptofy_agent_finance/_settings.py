"""The ``[agent_finance]`` section: the common agent keys plus the finance thresholds."""

from __future__ import annotations

from pydantic import Field

from botcriptofy_agents import AgentSettings, agent_settings_schema

ACTIONS = ("notify", "open_incident", "pause_dunning")


class FinanceSettings(AgentSettings):
    allowed_actions: tuple[str, ...] = Field(default=ACTIONS, description="Actions the agent may take.")
    approval_actions: tuple[str, ...] = Field(default=("pause_dunning",), description="Actions that wait for approval.")
    failure_rate: float = Field(5.0, gt=0, le=100, description="Percent of failed payments in the window above which the agent alerts.")
    failure_window: float = Field(86400.0, gt=0, description="Seconds of the payment-failure window (24 hours).")
    min_payments: int = Field(20, ge=1, description="Payments (failed + succeeded) in the window before a failure rate is judged.")
    pause_dunning_rate: float = Field(
        30.0, gt=0, le=100, description="Failure percent at or above which pausing dunning reminders is proposed (a processor outage)."
    )
    pause_hours: int = Field(24, ge=1, le=168, description="Hours a proposed dunning pause lasts.")
    revenue_drop: float = Field(
        10.0, gt=0, le=100, description="Percent drop of the last 7 days' revenue against the 7 before above which it alerts."
    )
    revenue_incident_drop: float = Field(30.0, gt=0, le=100, description="Percent drop at or above which an incident opens.")
    min_revenue_cents: int = Field(10000, ge=0, description="Revenue of the earlier 7 days below which a drop is not judged (cents).")
    large_refund_cents: int = Field(50000, ge=1, description="A single refund of at least this many cents is reported.")
    refund_spike: int = Field(5, ge=1, description="Refunds within 24 hours at which an incident opens.")
    check_interval: float = Field(
        3600.0, gt=0, description="Seconds between checks of the business figures (not live: restarts the plugin)."
    )


SCHEMA = agent_settings_schema(
    FinanceSettings,
    live=frozenset(
        {
            "failure_rate",
            "failure_window",
            "min_payments",
            "pause_dunning_rate",
            "pause_hours",
            "revenue_drop",
            "revenue_incident_drop",
            "min_revenue_cents",
            "large_refund_cents",
            "refund_spike",
        }
    ),
)
