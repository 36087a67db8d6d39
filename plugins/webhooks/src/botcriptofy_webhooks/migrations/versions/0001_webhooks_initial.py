"""Webhooks tables: endpoints and delivery attempts.

Revision ID: webhooks_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "webhooks_0001"
down_revision = None
branch_labels = ("webhooks",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhooks_deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("endpoint_id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks_deliveries")),
        sa.UniqueConstraint("endpoint_id", "event_id", name="uq_webhooks_deliveries_once"),
    )
    op.create_index("ix_webhooks_deliveries_due", "webhooks_deliveries", ["status", "next_attempt_at"], unique=False)
    op.create_index(op.f("ix_webhooks_deliveries_endpoint_id"), "webhooks_deliveries", ["endpoint_id"], unique=False)
    op.create_index(op.f("ix_webhooks_deliveries_tenant_id"), "webhooks_deliveries", ["tenant_id"], unique=False)
    op.create_table(
        "webhooks_endpoints",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks_endpoints")),
    )
    op.create_index(op.f("ix_webhooks_endpoints_tenant_id"), "webhooks_endpoints", ["tenant_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_webhooks_endpoints_tenant_id"), table_name="webhooks_endpoints")
    op.drop_table("webhooks_endpoints")
    op.drop_index(op.f("ix_webhooks_deliveries_tenant_id"), table_name="webhooks_deliveries")
    op.drop_index(op.f("ix_webhooks_deliveries_endpoint_id"), table_name="webhooks_deliveries")
    op.drop_index("ix_webhooks_deliveries_due", table_name="webhooks_deliveries")
    op.drop_table("webhooks_deliveries")
