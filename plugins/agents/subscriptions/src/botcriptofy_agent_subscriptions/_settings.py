"""The ``[agent_subscriptions]`` section: the common agent keys plus the subscriptions thresholds."""

from __future__ import annotations

from pydantic import Field

from botcriptofy_agents import AgentSettings, agent_settings_schema

ACTIONS = ("notify", "open_incident", "contact_tenant", "pause_dunning")


class SubscriptionsSettings(AgentSettings):
    allowed_actions: tuple[str, ...] = Field(default=ACTIONS, description="Actions the agent may take.")
    approval_actions: tuple[str, ...] = Field(default=("pause_dunning",), description="Actions that wait for approval.")
    churn_rate: float = Field(15.0, gt=0, le=100, description="Percent of subscriptions canceled in the window above which it alerts.")
    churn_incident_rate: float = Field(25.0, gt=0, le=100, description="Churn percent at or above which an incident opens.")
    churn_window_days: int = Field(30, ge=1, le=365, description="Days of the churn window.")
    min_subscriptions: int = Field(10, ge=1, description="Subscriptions in the churn base below which churn is not judged.")
    quota_warning_percent: float = Field(
        80.0, gt=0, lt=100, description="Percent of a quota at which the tenant is told which plan lifts it."
    )
    trial_notice_days: float = Field(3.0, gt=0, description="Days before a trial ends within which the tenant is reminded.")
    key_plans: tuple[str, ...] = Field(
        default=("enterprise",), description="Plans whose past-due accounts get a person's call: automatic reminders pause (approval)."
    )
    pause_hours: int = Field(72, ge=1, le=168, description="Hours a proposed dunning pause for a key account lasts.")
    check_interval: float = Field(3600.0, gt=0, description="Seconds between checks of the churn figures (not live: restarts the plugin).")


SCHEMA = agent_settings_schema(
    SubscriptionsSettings,
    live=frozenset(
        {
            "churn_rate",
            "churn_incident_rate",
            "churn_window_days",
            "min_subscriptions",
            "quota_warning_percent",
            "trial_notice_days",
            "key_plans",
            "pause_hours",
        }
    ),
)
