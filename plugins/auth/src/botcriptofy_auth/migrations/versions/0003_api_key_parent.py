"""auth: an API key minted by another key remembers its parent (revoked with it)

Revision ID: auth_0003
Revises: auth_0002
Create Date: 2026-11-29

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_0003"
down_revision: str | Sequence[str] | None = "auth_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("auth_api_keys", sa.Column("parent_key_id", sa.String(36), nullable=True))
    op.create_index("ix_auth_api_keys_parent_key_id", "auth_api_keys", ["parent_key_id"])


def downgrade() -> None:
    op.drop_index("ix_auth_api_keys_parent_key_id", table_name="auth_api_keys")
    with op.batch_alter_table("auth_api_keys") as batch:
        batch.drop_column("parent_key_id")
