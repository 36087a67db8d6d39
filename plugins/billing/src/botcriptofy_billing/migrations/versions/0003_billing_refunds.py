"""Refunds (from ``charge.refunded``) and dunning pauses (from the approved ``billing.pause_dunning`` action).

Revision ID: billing_0003
Revises: billing_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "billing_0003"
down_revision = "billing_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_refunds",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("charge_id", sa.String(255), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_billing_refunds"),
    )
    op.create_index("ix_billing_refunds_tenant_id", "billing_refunds", ["tenant_id"])
    op.create_index("ix_billing_refunds_charge_id", "billing_refunds", ["charge_id"])
    op.create_table(
        "billing_dunning_pauses",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("scope_tenant", sa.String(64), nullable=True),
        sa.Column("until", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_billing_dunning_pauses"),
    )


def downgrade() -> None:
    op.drop_table("billing_dunning_pauses")
    op.drop_index("ix_billing_refunds_charge_id", table_name="billing_refunds")
    op.drop_index("ix_billing_refunds_tenant_id", table_name="billing_refunds")
    op.drop_table("billing_refunds")
