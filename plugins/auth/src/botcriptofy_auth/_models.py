"""The auth plugin's tables (its own metadata; the storage plugin runs its migrations).

Every table of tenant data has a ``tenant_id`` column: the storage plugin scopes tenant sessions
to it and, on PostgreSQL, row-level security enforces it as well. ``auth_tenants`` is the list of
tenants itself and is platform data.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if dialect.name != "sqlite" else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


ID = sa.String(36)


class Tenant(Base):
    __tablename__ = "auth_tenants"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(sa.String(16))  # company | trader | influencer
    name: Mapped[str] = mapped_column(sa.String(200))
    plan: Mapped[str] = mapped_column(sa.String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Influencer sign-ups: 'pending' until the marketing department approves them ('approved'); None otherwise.
    review: Mapped[str | None] = mapped_column(sa.String(16))
    reviewed_by: Mapped[str | None] = mapped_column(sa.String(36))

    __table_args__ = (
        sa.CheckConstraint("type IN ('company', 'trader', 'influencer')", name="type"),
        # One company (the operator) holds every staff member.
        sa.Index(
            "uq_auth_tenants_one_company",
            "type",
            unique=True,
            sqlite_where=sa.text("type = 'company'"),
            postgresql_where=sa.text("type = 'company'"),
        ),
        {"info": {"tenant_column": "id"}},  # row-level security: a tenant sees its own tenant row (storage plugin)
    )


class User(Base):
    __tablename__ = "auth_users"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_tenants.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16), default="user")  # user | service
    email: Mapped[str | None] = mapped_column(sa.String(320), unique=True)
    email_verified: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    name: Mapped[str] = mapped_column(sa.String(200))
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    status: Mapped[str] = mapped_column(sa.String(16), default="active")  # active | disabled
    super_admin: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    department: Mapped[str | None] = mapped_column(sa.String(32))  # service principals: the department they act for
    totp_secret: Mapped[str | None] = mapped_column(sa.String(255))  # encrypted
    totp_enabled: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    totp_last_step: Mapped[int | None] = mapped_column(sa.BigInteger)
    phone: Mapped[str | None] = mapped_column(sa.String(512))  # encrypted
    tax_id: Mapped[str | None] = mapped_column(sa.String(512))  # encrypted
    failed_logins: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed_window_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        sa.CheckConstraint("kind IN ('user', 'service')", name="kind"),
        sa.CheckConstraint("status IN ('active', 'disabled')", name="status"),
    )


class StaffRole(Base):
    __tablename__ = "auth_staff_roles"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_tenants.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_users.id", ondelete="CASCADE"))
    department: Mapped[str] = mapped_column(sa.String(32))
    role: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("user_id", "department", name="uq_auth_staff_roles_user_department"),
        sa.CheckConstraint("role IN ('manager', 'member', 'viewer')", name="role"),
    )


class Session(Base):
    """A login: one refresh-token family. Access tokens name it in their ``sid`` claim."""

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_tenants.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_users.id", ondelete="CASCADE"), index=True)
    method: Mapped[str] = mapped_column(sa.String(16))  # password | google | service
    amr: Mapped[str] = mapped_column(sa.String(32), default="pwd")  # authentication methods, space-separated (RFC 8176)
    ip: Mapped[str | None] = mapped_column(sa.String(64))
    user_agent: Mapped[str | None] = mapped_column(sa.String(300))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoke_reason: Mapped[str | None] = mapped_column(sa.String(32))


class RefreshToken(Base):
    __tablename__ = "auth_refresh_tokens"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_tenants.id", ondelete="CASCADE"), index=True)
    session_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApiKey(Base):
    __tablename__ = "auth_api_keys"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_tenants.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    prefix: Mapped[str] = mapped_column(sa.String(16))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The key that created this one (None when a person did): revoking a key revokes what it minted.
    parent_key_id: Mapped[str | None] = mapped_column(ID, index=True)


class LoginIp(Base):
    __tablename__ = "auth_login_ips"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_tenants.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_users.id", ondelete="CASCADE"))
    ip: Mapped[str] = mapped_column(sa.String(64))
    first_seen: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (sa.UniqueConstraint("user_id", "ip", name="uq_auth_login_ips_user_ip"),)


class Identity(Base):
    """A link between a user and an external identity provider's subject (Google)."""

    __tablename__ = "auth_identities"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_tenants.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(sa.String(32))
    subject: Mapped[str] = mapped_column(sa.String(255))
    email: Mapped[str | None] = mapped_column(sa.String(320))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (sa.UniqueConstraint("provider", "subject", name="uq_auth_identities_provider_subject"),)


class AccountToken(Base):
    """A single-use link sent by e-mail: verify an address, reset a password, confirm or cancel an e-mail change.

    Only the token's keyed hash is stored. ``email`` is the address the link went to; an e-mail
    change has two tokens sharing ``change_id`` (the new address proves ownership, the old one
    confirms or cancels) and both carry ``new_email``.
    """

    __tablename__ = "auth_account_tokens"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_tenants.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("auth_users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(sa.String(24))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    email: Mapped[str] = mapped_column(sa.String(320))
    new_email: Mapped[str | None] = mapped_column(sa.String(320))
    change_id: Mapped[str | None] = mapped_column(ID, index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        sa.CheckConstraint("purpose IN ('verify_email', 'reset_password', 'change_email_new', 'change_email_old')", name="purpose"),
    )


TENANT_TABLES = (
    "auth_users",
    "auth_staff_roles",
    "auth_sessions",
    "auth_refresh_tokens",
    "auth_api_keys",
    "auth_login_ips",
    "auth_identities",
    "auth_account_tokens",
)
