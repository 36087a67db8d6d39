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
    reason: str  # "unknown_user", "bad_password", "bad_totp", "locked", "disabled"
    failures: int
    ip: str | None = None


class AccountLocked(Event):
    event_type = "auth.account_locked"

    user_id: str
    tenant_id: str
    email: str
    failures: int
    locked_until: datetime
    ip: str | None = None


class NewIpLogin(Event):
    event_type = "auth.new_ip_login"

    user_id: str
    tenant_id: str
    ip: str
    known_ips: int


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
