"""The ``[agent_audit]`` section: the common agent keys plus the audit thresholds."""

from __future__ import annotations

from pydantic import Field

from botcriptofy_agents import AgentSettings, agent_settings_schema

ACTIONS = ("notify", "open_incident", "revoke_sessions")


class AuditAgentSettings(AgentSettings):
    allowed_actions: tuple[str, ...] = Field(default=ACTIONS, description="Actions the agent may take.")
    approval_actions: tuple[str, ...] = Field(default=("revoke_sessions",), description="Actions that wait for approval.")
    verify_interval: float = Field(3600.0, ge=1, description="Seconds between verifications of the audit chains (not live).")
    access_window: float = Field(3600.0, gt=0, description="Seconds of the window in which one staff account's reads are counted.")
    access_tenants: int = Field(20, ge=2, description="Distinct tenants one staff account reads within the window that alert.")
    access_revoke_tenants: int = Field(
        50, ge=2, description="Distinct tenants one staff account reads within the window that propose logging it out everywhere."
    )
    access_actions: tuple[str, ...] = Field(
        default=("auth.user_lookup",), description="Audit actions that are a staff account reading a tenant's data (details.tenant_id)."
    )
    privacy_days_at_risk: int = Field(3, ge=0, le=15, description="Days left on a privacy request at or below which it is at risk.")
    revoke_action: str = Field("auth.revoke_staff_sessions", description="The approval action that logs a staff account out everywhere.")


SCHEMA = agent_settings_schema(
    AuditAgentSettings,
    live=frozenset({"access_window", "access_tenants", "access_revoke_tenants", "access_actions", "privacy_days_at_risk", "revoke_action"}),
)
