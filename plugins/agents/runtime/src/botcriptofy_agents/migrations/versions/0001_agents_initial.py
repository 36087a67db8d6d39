"""Agents runtime: the decision records.

Revision ID: agents_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "agents_0001"
down_revision = None
branch_labels = ("agents",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents_decisions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("department", sa.String(length=32), nullable=False),
        sa.Column("trigger_kind", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("subject_tenant", sa.String(length=64), nullable=True),
        sa.Column("trigger", sa.JSON(), nullable=False),
        sa.Column("context_digest", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("prompt_version", sa.String(length=16), nullable=False),
        sa.Column("raw_output", sa.Text(), nullable=True),
        sa.Column("decision", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("fallback_reason", sa.String(length=32), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("outcome_detail", sa.JSON(), nullable=True),
        sa.Column("approval_id", sa.String(length=64), nullable=True),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents_decisions")),
    )
    op.create_index("ix_agents_decisions_department_created", "agents_decisions", ["department", "created_at"])
    op.create_index("ix_agents_decisions_agent_created", "agents_decisions", ["agent", "created_at"])
    op.create_index("ix_agents_decisions_approval", "agents_decisions", ["approval_id"])


def downgrade() -> None:
    op.drop_index("ix_agents_decisions_approval", table_name="agents_decisions")
    op.drop_index("ix_agents_decisions_agent_created", table_name="agents_decisions")
    op.drop_index("ix_agents_decisions_department_created", table_name="agents_decisions")
    op.drop_table("agents_decisions")
