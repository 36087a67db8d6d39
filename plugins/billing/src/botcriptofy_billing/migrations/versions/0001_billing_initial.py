"""Billing tables: customers, subscriptions, the webhook event ledger and quota usage.

Revision ID: billing_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "billing_0001"
down_revision = None
branch_labels = ("billing",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_customers",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("stripe_customer_id", sa.String(255), nullable=True),
        sa.Column("assigned_plan", sa.String(32), nullable=True),
        sa.Column("had_trial", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_billing_customers"),
        sa.UniqueConstraint("stripe_customer_id", name="uq_billing_customers_stripe_customer_id"),
    )
    op.create_table(
        "billing_subscriptions",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("plan", sa.String(32), nullable=False),
        sa.Column("interval", sa.String(8), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("price_id", sa.String(255), nullable=True),
        sa.Column("current_period_end", sa.BigInteger(), nullable=True),
        sa.Column("trial_end", sa.BigInteger(), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("canceled_at", sa.BigInteger(), nullable=True),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("dunning_exhausted", sa.Boolean(), nullable=False),
        sa.Column("state_as_of", sa.Float(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_billing_subscriptions"),
    )
    op.create_index("ix_billing_subscriptions_tenant_id", "billing_subscriptions", ["tenant_id"])
    op.create_table(
        "billing_webhook_events",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("object_id", sa.String(255), nullable=True),
        sa.Column("tenant", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_billing_webhook_events"),
    )
    op.create_table(
        "billing_quota_usage",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("quota", sa.String(64), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("warned", sa.Boolean(), nullable=False),
        sa.Column("exhausted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "quota", "period", name="pk_billing_quota_usage"),
    )


def downgrade() -> None:
    op.drop_table("billing_quota_usage")
    op.drop_table("billing_webhook_events")
    op.drop_index("ix_billing_subscriptions_tenant_id", table_name="billing_subscriptions")
    op.drop_table("billing_subscriptions")
    op.drop_table("billing_customers")
