"""Outbox: the envelope's metadata (trace context and the like), carried from publisher to handlers.

Revision ID: storage_0003
Revises: storage_0002
Create Date: 2026-11-29 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "storage_0003"
down_revision: str | Sequence[str] | None = "storage_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("botcriptofy_outbox") as batch:
        batch.add_column(sa.Column("envelope_metadata", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")))


def downgrade() -> None:
    with op.batch_alter_table("botcriptofy_outbox") as batch:
        batch.drop_column("envelope_metadata")
