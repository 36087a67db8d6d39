"""Security and account events the auth plugin publishes (the security agent and the audit trail consume them).

None carries a password, a token or a key; ``ip`` is the caller's address as the plugin saw it.
"""

from __future__ import annotations

from datetime import datetime

from botcriptofy import Event


class UserSignedUp(Event):
    event_type = "auth.user_signed_up"

    user_id: str
    tenant_id: str
    account_type: str
    method: str  # "password" or "google"
    ip: str | None = None


class LoginSucceeded(Event):
    event_type = "auth.login_succeeded"

    user_id: str
    tenant_id: str
    session_id: str
    method: str  # "password" or "google"
    ip: str | None = None


class LoginFailed(Event):
    event_type = "auth.login_failed"

    email: str
    user_id: str | None
    tenant_id: str | None
    reason: str  # "unknown_user", "bad_password", "bad_totp", "guarded"
    failures: int
    ip: str | None = None


class AccountLocked(Event):
    """Failed logins from many addresses guard the account: notify its owner (only a known address, TOTP or staff unlock logs in)."""

    event_type = "auth.account_locked"

    user_id: str
    tenant_id: str
    email: str
    failures: int
    locked_until: datetime
    ip: str | None = None


class LoginThrottled(Event):
    """One address failed ``failures`` logins for this account and must wait ``retry_after`` seconds: notify the owner."""

    event_type = "auth.login_throttled"

    user_id: str
    tenant_id: str
    email: str
    failures: int
    retry_after: float
    ip: str | None = None


class NewIpLogin(Event):
    """A login from an address the account never used (not the first login): notify the owner with the device."""

    event_type = "auth.new_ip_login"

    user_id: str
    tenant_id: str
    ip: str
    known_ips: int
    user_agent: str | None = None
    method: str | None = None  # "password" or "google"


class RefreshTokenReused(Event):
    event_type = "auth.refresh_token_reused"

    user_id: str
    tenant_id: str
    session_id: str
    ip: str | None = None


class SessionsRevoked(Event):
    event_type = "auth.sessions_revoked"

    user_id: str
    tenant_id: str
    session_ids: list[str]
    reason: str  # "logout", "logout_all", "revoked", "token_reuse", "password_changed"


class ApiKeyCreated(Event):
    event_type = "auth.api_key_created"

    key_id: str
    user_id: str
    tenant_id: str
    scopes: list[str]
    expires_at: datetime


class ApiKeyRevoked(Event):
    event_type = "auth.api_key_revoked"

    key_id: str
    user_id: str
    tenant_id: str


class StaffRolesChanged(Event):
    event_type = "auth.staff_roles_changed"

    user_id: str
    tenant_id: str
    roles: dict[str, str]
    changed_by: str | None = None


class TotpEnabled(Event):
    event_type = "auth.totp_enabled"

    user_id: str
    tenant_id: str


class UserBlocked(Event):
    event_type = "auth.user_blocked"

    user_id: str
    tenant_id: str
    blocked: bool  # False when unblocked
    reason: str | None = None
    by: str | None = None


class InfluencerApproved(Event):
    """The marketing department approved an influencer sign-up: the tenant moves to the Internal plan (billing assigns it)."""

    event_type = "auth.influencer_approved"

    tenant_id: str
    user_ids: list[str]
    plan: str
    approved_by: str


class EmailVerified(Event):
    """The account's address was proved through the link sent to it."""

    event_type = "auth.email_verified"

    user_id: str
    tenant_id: str


class PasswordReset(Event):
    """The password was set again through a reset link; every session of the account was revoked."""

    event_type = "auth.password_reset"

    user_id: str
    tenant_id: str


class EmailChanged(Event):
    """The account moved to a new address, confirmed by the new address (and by the old one when it was verified)."""

    event_type = "auth.email_changed"

    user_id: str
    tenant_id: str
