"""auth: single-use account links sent by e-mail (verification, password reset, e-mail change)

Revision ID: auth_0004
Revises: auth_0003
Create Date: 2026-11-29

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_0004"
down_revision: str | Sequence[str] | None = "auth_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(36)


def _ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "auth_account_tokens",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("purpose", sa.String(24), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("new_email", sa.String(320), nullable=True),
        sa.Column("change_id", ID, nullable=True),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("used_at", nullable=True),
        _ts("revoked_at", nullable=True),
        sa.CheckConstraint(
            "purpose IN ('verify_email', 'reset_password', 'change_email_new', 'change_email_old')",
            name=op.f("ck_auth_account_tokens_purpose"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["auth_tenants.id"], name=op.f("fk_auth_account_tokens_tenant_id_auth_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["auth_users.id"], name=op.f("fk_auth_account_tokens_user_id_auth_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_account_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_auth_account_tokens_token_hash")),
    )
    op.create_index("ix_auth_account_tokens_tenant_id", "auth_account_tokens", ["tenant_id"])
    op.create_index("ix_auth_account_tokens_user_id", "auth_account_tokens", ["user_id"])
    op.create_index("ix_auth_account_tokens_change_id", "auth_account_tokens", ["change_id"])


def downgrade() -> None:
    op.drop_table("auth_account_tokens")
