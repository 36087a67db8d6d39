"""Request and response models of the auth endpoints (they validate requests and feed /openapi.json)."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from ._rbac import AccountType, Department, Role
from ._util import check_look_alikes, normalise_email


def _email(value: str) -> str:
    return normalise_email(value)


def _text(value: str) -> str:
    value = unicodedata.normalize("NFKC", value).strip()
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs") for ch in value):
        raise ValueError("must not contain control or invisible characters")
    if not value:
        raise ValueError("must not be blank")
    return value


_PERMISSION = re.compile(r"^[a-z][a-z0-9_-]{0,39}:([a-z][a-z0-9_-]{0,39}|\*)$")


def _permission(value: str) -> str:
    if not _PERMISSION.match(value):
        raise ValueError("a scope is a permission like 'trading:read' or 'bots:*'")
    return value


Email = Annotated[str, StringConstraints(max_length=320), AfterValidator(_email)]
# A new account's address: also refused when it reads like another address (look-alike characters).
NewEmail = Annotated[str, StringConstraints(max_length=320), AfterValidator(_email), AfterValidator(check_look_alikes)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Name = Annotated[str, StringConstraints(max_length=200), AfterValidator(_text)]
Scope = Annotated[str, StringConstraints(max_length=81), AfterValidator(_permission)]
TotpCode = Annotated[str, StringConstraints(max_length=16, pattern=r"^[0-9 ]+$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class SignupIn(_In):
    email: NewEmail
    password: Password
    name: Name
    account_type: AccountType = Field(
        description="'trader' (Free plan) or 'influencer' (Free plan until the marketing department approves it: then Internal)."
    )


class LoginIn(_In):
    email: Email
    password: Password
    totp_code: TotpCode | None = Field(None, description="Staff with TOTP (always the super-admin): the 6-digit code.")


class RefreshIn(_In):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class PasswordChangeIn(_In):
    current_password: Password
    new_password: Password


class ProfileIn(_In):
    name: Name | None = None
    phone: Annotated[str, StringConstraints(max_length=32, pattern=r"^\+?[0-9 ()-]{6,31}$")] | None = Field(
        None, description="Stored encrypted (AES-256-GCM)."
    )
    tax_id: Annotated[str, StringConstraints(max_length=32, pattern=r"^[0-9A-Za-z./-]{3,32}$")] | None = Field(
        None, description="CPF/CNPJ or another tax id; stored encrypted (AES-256-GCM)."
    )


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")


class UserOut(BaseModel):
    id: str
    email: str | None
    name: str
    kind: str
    email_verified: bool
    super_admin: bool
    totp_enabled: bool
    created_at: datetime


class TenantOut(BaseModel):
    id: str
    type: str
    name: str
    plan: str
    review: Literal["pending", "approved"] | None = Field(
        None, description="Influencers: 'pending' until the marketing department approves the sign-up."
    )


class InfluencerOut(BaseModel):
    tenant: TenantOut
    users: list[str] = Field(description="E-mail addresses of the tenant's users.")
    created_at: datetime


class ReviewQuery(_In):
    review: Literal["pending", "approved"] | None = Field(None, description="Only tenants in this review state.")


class SignupOut(BaseModel):
    user: UserOut
    tenant: TenantOut
    tokens: TokenPair


class PlanOut(BaseModel):
    name: str
    source: Literal["billing", "stored"] = Field(description="'billing' when the billing plugin answered, else the tenant's stored plan.")
    features: list[str] = []
    limits: dict[str, int | None] = {}


class MeUserOut(UserOut):
    phone: str | None = None
    tax_id: str | None = None


class MeOut(BaseModel):
    user: MeUserOut
    tenant: TenantOut
    roles: dict[str, str] = Field(description="Department to role, for company staff.")
    permissions: list[str]
    plan: PlanOut
    auth: Literal["session", "api_key"]


class ApiKeyIn(_In):
    name: Name = Field(max_length=100)
    scopes: list[Scope] = Field(min_length=1, max_length=50, description="Permissions the key carries; each must be one its owner holds.")
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="Default: auth.apikey_default_days; at most auth.apikey_max_days.")


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The secret. It is shown only this once: store it now.")


class SessionOut(BaseModel):
    id: str
    method: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool


class RevokedOut(BaseModel):
    revoked: int


class TotpEnrollOut(BaseModel):
    secret: str
    otpauth_uri: str


class TotpCodeIn(_In):
    code: TotpCode


class TotpStatusOut(BaseModel):
    totp_enabled: bool


class GoogleStartQuery(_In):
    account_type: AccountType = Field("trader", description="Account type if the Google login creates a new account.")
    mode: Literal["redirect", "json"] = Field("redirect", description="'json' answers {authorization_url} instead of a 302.")


class GoogleStartOut(BaseModel):
    authorization_url: str


class GoogleCallbackQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: Annotated[str, StringConstraints(max_length=2048)] | None = None
    state: Annotated[str, StringConstraints(max_length=256)] | None = None
    error: Annotated[str, StringConstraints(max_length=256)] | None = None
    error_description: Annotated[str, StringConstraints(max_length=1024)] | None = None


class GoogleLoginOut(TokenPair):
    user_id: str
    created: bool = Field(description="True when this login created the account.")
    linked: bool = Field(description="True when this login linked Google to an existing account by verified e-mail.")


class StaffIn(_In):
    email: NewEmail
    name: Name
    password: Password
    roles: dict[Department, Role] = Field(default_factory=dict)


class StaffRolesIn(_In):
    roles: dict[Department, Role]


class StaffOut(BaseModel):
    id: str
    email: str | None
    name: str
    kind: str
    super_admin: bool
    totp_enabled: bool
    status: str
    roles: dict[str, str]


class ServicePrincipalIn(_In):
    department: Department
    role: Role = "member"
    name: Name | None = Field(None, max_length=100)
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class BlockIn(_In):
    reason: Annotated[str, StringConstraints(max_length=500), AfterValidator(_text)] | None = None


class ServiceKeyOut(ApiKeyCreatedOut):
    principal_id: str
    department: str
    role: str


class PermissionOut(BaseModel):
    name: str
    description: str
    grants: list[str] = Field(
        description="Default holders: 'trader', 'influencer', 'company' or '<department>:<role>' (covers higher roles)."
    )
    plugin: str = Field(description="The plugin that declares it ('settings' for auth.extra_grants only).")


class ApprovalOut(BaseModel):
    """A destructive staff action waiting for the security department's approval."""

    approval_id: str
    action: str
    status: str
    expires_at: datetime


AccountToken = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class AccountTokenIn(_In):
    token: AccountToken = Field(description="The token of the link from the e-mail.")


class PasswordForgotIn(_In):
    email: Email


class PasswordResetIn(_In):
    token: AccountToken = Field(description="The token of the reset link from the e-mail.")
    new_password: Password


class EmailChangeIn(_In):
    new_email: NewEmail
    password: Password = Field(description="The current password: changing the address needs a fresh proof of identity.")
    totp_code: TotpCode | None = Field(None, description="The TOTP code, when two-factor is on.")


class AcceptedOut(BaseModel):
    detail: str


class VerificationSentOut(BaseModel):
    sent: bool = True
    expires_at: datetime


class EmailVerifiedOut(BaseModel):
    email_verified: bool = True


class EmailChangeOut(BaseModel):
    change_id: str
    new_email: str
    confirmations: list[Literal["new_address", "current_address"]] = Field(
        description="The links that must be opened: the new address always, the current one when it is verified."
    )
    expires_at: datetime


class EmailChangeStatusOut(BaseModel):
    status: Literal["pending", "changed"]
    waiting_for: list[Literal["new_address", "current_address"]] = Field(default_factory=list)
