"""auth: influencer sign-ups wait for the marketing department's review

Revision ID: auth_0002
Revises: auth_0001
Create Date: 2026-11-29

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_0002"
down_revision: str | Sequence[str] | None = "auth_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("auth_tenants", sa.Column("review", sa.String(16), nullable=True))
    op.add_column("auth_tenants", sa.Column("reviewed_by", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("auth_tenants") as batch:
        batch.drop_column("reviewed_by")
        batch.drop_column("review")
