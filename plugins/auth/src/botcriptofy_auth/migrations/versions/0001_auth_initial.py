"""auth: tenants, users, staff roles, sessions, refresh tokens, API keys, login IPs, linked identities

Revision ID: auth_0001
Revises:
Create Date: 2026-11-25

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(36)


def _ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "auth_tenants",
        sa.Column("id", ID, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("plan", sa.String(32), nullable=False),
        _ts("created_at"),
        sa.CheckConstraint("type IN ('company', 'trader', 'influencer')", name=op.f("ck_auth_tenants_type")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_tenants")),
    )
    op.create_index(
        "uq_auth_tenants_one_company",
        "auth_tenants",
        ["type"],
        unique=True,
        sqlite_where=sa.text("type = 'company'"),
        postgresql_where=sa.text("type = 'company'"),
    )

    op.create_table(
        "auth_users",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("email_verified", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("super_admin", sa.Boolean(), nullable=False),
        sa.Column("department", sa.String(32), nullable=True),
        sa.Column("totp_secret", sa.String(255), nullable=True),
        sa.Column("totp_enabled", sa.Boolean(), nullable=False),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("phone", sa.String(512), nullable=True),
        sa.Column("tax_id", sa.String(512), nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        _ts("failed_window_start", True),
        _ts("locked_until", True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint("kind IN ('user', 'service')", name=op.f("ck_auth_users_kind")),
        sa.CheckConstraint("status IN ('active', 'disabled')", name=op.f("ck_auth_users_status")),
        sa.ForeignKeyConstraint(["tenant_id"], ["auth_tenants.id"], ondelete="CASCADE", name=op.f("fk_auth_users_tenant_id_auth_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_users")),
        sa.UniqueConstraint("email", name=op.f("uq_auth_users_email")),
    )
    op.create_index(op.f("ix_auth_users_tenant_id"), "auth_users", ["tenant_id"])

    op.create_table(
        "auth_staff_roles",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("department", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        _ts("created_at"),
        sa.CheckConstraint("role IN ('manager', 'member', 'viewer')", name=op.f("ck_auth_staff_roles_role")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["auth_tenants.id"], ondelete="CASCADE", name=op.f("fk_auth_staff_roles_tenant_id_auth_tenants")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["auth_users.id"], ondelete="CASCADE", name=op.f("fk_auth_staff_roles_user_id_auth_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_staff_roles")),
        sa.UniqueConstraint("user_id", "department", name="uq_auth_staff_roles_user_department"),
    )
    op.create_index(op.f("ix_auth_staff_roles_tenant_id"), "auth_staff_roles", ["tenant_id"])

    op.create_table(
        "auth_sessions",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("amr", sa.String(32), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(300), nullable=True),
        _ts("created_at"),
        _ts("last_used_at"),
        _ts("expires_at"),
        _ts("revoked_at", True),
        sa.Column("revoke_reason", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["auth_tenants.id"], ondelete="CASCADE", name=op.f("fk_auth_sessions_tenant_id_auth_tenants")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["auth_users.id"], ondelete="CASCADE", name=op.f("fk_auth_sessions_user_id_auth_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_sessions")),
    )
    op.create_index(op.f("ix_auth_sessions_tenant_id"), "auth_sessions", ["tenant_id"])
    op.create_index(op.f("ix_auth_sessions_user_id"), "auth_sessions", ["user_id"])

    op.create_table(
        "auth_refresh_tokens",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("session_id", ID, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("used_at", True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["auth_tenants.id"], ondelete="CASCADE", name=op.f("fk_auth_refresh_tokens_tenant_id_auth_tenants")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["auth_sessions.id"], ondelete="CASCADE", name=op.f("fk_auth_refresh_tokens_session_id_auth_sessions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_auth_refresh_tokens_token_hash")),
    )
    op.create_index(op.f("ix_auth_refresh_tokens_tenant_id"), "auth_refresh_tokens", ["tenant_id"])
    op.create_index(op.f("ix_auth_refresh_tokens_session_id"), "auth_refresh_tokens", ["session_id"])

    op.create_table(
        "auth_api_keys",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("last_used_at", True),
        _ts("revoked_at", True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["auth_tenants.id"], ondelete="CASCADE", name=op.f("fk_auth_api_keys_tenant_id_auth_tenants")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["auth_users.id"], ondelete="CASCADE", name=op.f("fk_auth_api_keys_user_id_auth_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_auth_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_auth_api_keys_tenant_id"), "auth_api_keys", ["tenant_id"])
    op.create_index(op.f("ix_auth_api_keys_user_id"), "auth_api_keys", ["user_id"])

    op.create_table(
        "auth_login_ips",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        _ts("first_seen"),
        _ts("last_seen"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["auth_tenants.id"], ondelete="CASCADE", name=op.f("fk_auth_login_ips_tenant_id_auth_tenants")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["auth_users.id"], ondelete="CASCADE", name=op.f("fk_auth_login_ips_user_id_auth_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_login_ips")),
        sa.UniqueConstraint("user_id", "ip", name="uq_auth_login_ips_user_ip"),
    )
    op.create_index(op.f("ix_auth_login_ips_tenant_id"), "auth_login_ips", ["tenant_id"])

    op.create_table(
        "auth_identities",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        _ts("created_at"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["auth_tenants.id"], ondelete="CASCADE", name=op.f("fk_auth_identities_tenant_id_auth_tenants")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["auth_users.id"], ondelete="CASCADE", name=op.f("fk_auth_identities_user_id_auth_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_identities")),
        sa.UniqueConstraint("provider", "subject", name="uq_auth_identities_provider_subject"),
    )
    op.create_index(op.f("ix_auth_identities_tenant_id"), "auth_identities", ["tenant_id"])
    op.create_index(op.f("ix_auth_identities_user_id"), "auth_identities", ["user_id"])


def downgrade() -> None:
    for table in (
        "auth_identities",
        "auth_login_ips",
        "auth_api_keys",
        "auth_refresh_tokens",
        "auth_sessions",
        "auth_staff_roles",
        "auth_users",
    ):
        op.drop_table(table)
    op.drop_index("uq_auth_tenants_one_company", table_name="auth_tenants")
    op.drop_table("auth_tenants")
