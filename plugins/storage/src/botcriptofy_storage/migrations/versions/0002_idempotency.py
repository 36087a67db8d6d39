"""Idempotency keys: one row per (caller, Idempotency-Key) digest with the first response.

Revision ID: storage_0002
Revises: storage_0001
Create Date: 2026-11-29 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "storage_0002"
down_revision: str | Sequence[str] | None = "storage_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "botcriptofy_idempotency",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer()),
        sa.Column("headers", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
        sa.Column("body", sa.LargeBinary()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_botcriptofy_idempotency_expires", "botcriptofy_idempotency", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_botcriptofy_idempotency_expires", table_name="botcriptofy_idempotency")
    op.drop_table("botcriptofy_idempotency")
