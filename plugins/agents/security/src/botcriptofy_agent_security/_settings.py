"""The ``[agent_security]`` section: the common agent keys plus the security thresholds (all live)."""

from __future__ import annotations

from pydantic import Field

from botcriptofy_agents import AgentSettings, agent_settings_schema

ACTIONS = ("notify", "open_incident", "lock_account", "revoke_sessions")

# What an account does, besides the events the agent aggregates anyway: what ``activity`` counts.
ACTIVITY_EVENTS = (
    "auth.login_succeeded",
    "auth.api_key_created",
    "auth.api_key_revoked",
    "auth.email_changed",
    "auth.password_reset",
    "auth.totp_enabled",
    "auth.sessions_revoked",
    "billing.subscription_changed",
    "exchanges.account_linked",
    "exchanges.account_unlinked",
    "exchanges.order_filled",
)


class SecuritySettings(AgentSettings):
    allowed_actions: tuple[str, ...] = Field(default=ACTIONS, description="Actions the agent may take.")
    approval_actions: tuple[str, ...] = Field(default=("lock_account", "revoke_sessions"), description="Actions that wait for approval.")
    failed_login_threshold: int = Field(5, ge=1, description="Failed logins per account or address within the window that alert.")
    failed_login_window: float = Field(900.0, gt=0, description="Seconds of the failed-login window (15 minutes).")
    lock_threshold: int = Field(15, ge=1, description="Failed logins per account within the window that propose locking it.")
    stuffing_accounts: int = Field(3, ge=2, description="Distinct accounts failing from one address within the window: an incident.")
    activity_threshold: int = Field(100, ge=1, description="Actions per hour per account above which an incident opens.")
    activity_revoke_threshold: int = Field(
        500, ge=1, description="Actions per hour per account above which revoking its sessions is proposed."
    )
    escalate_after_incidents: int = Field(
        2, ge=1, description="Earlier incidents (24 h) on an account after which a lockout proposes a lock."
    )
    activity_events: tuple[str, ...] = Field(
        default=ACTIVITY_EVENTS,
        description=(
            "Event types counted as an account's actions (with the failed logins, lockouts, new addresses and token reuses); "
            'the agent subscribes to these only. "*": every event naming a user.'
        ),
    )
    lock_action: str = Field("auth.block_staff", description="The approval action that blocks an account (the auth plugin's).")
    revoke_action: str = Field("auth.revoke_staff_sessions", description="The approval action that logs an account out everywhere.")


SCHEMA = agent_settings_schema(
    SecuritySettings,
    live=frozenset(
        {
            "failed_login_threshold",
            "failed_login_window",
            "lock_threshold",
            "stuffing_accounts",
            "activity_threshold",
            "activity_revoke_threshold",
            "escalate_after_incidents",
            "activity_events",
            "lock_action",
            "revoke_action",
        }
    ),
)
