"""Transactional outbox: events and their per-handler deliveries.

Revision ID: storage_0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "storage_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "botcriptofy_outbox",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("envelope_tenant_id", sa.String(64)),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_botcriptofy_outbox_dispatch", "botcriptofy_outbox", ["dispatched_at", "created_at"])
    op.create_table(
        "botcriptofy_outbox_delivery",
        sa.Column("event_id", sa.String(36), sa.ForeignKey("botcriptofy_outbox.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("handler", sa.String(200), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.Column("locked_by", sa.String(120)),
        sa.Column("last_error", sa.Text()),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_botcriptofy_outbox_delivery_due", "botcriptofy_outbox_delivery", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_botcriptofy_outbox_delivery_due", table_name="botcriptofy_outbox_delivery")
    op.drop_table("botcriptofy_outbox_delivery")
    op.drop_index("ix_botcriptofy_outbox_dispatch", table_name="botcriptofy_outbox")
    op.drop_table("botcriptofy_outbox")
