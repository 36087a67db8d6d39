"""Notes, comments and countries.

Revision ID: sample_0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sample_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sample_notes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("body", sa.String(200), nullable=False),
    )
    op.create_table(
        "sample_comments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("note_id", sa.Integer(), sa.ForeignKey("sample_notes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("body", sa.String(200), nullable=False),
    )
    op.create_table(
        "sample_countries",
        sa.Column("code", sa.String(2), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sample_countries")
    op.drop_table("sample_comments")
    op.drop_table("sample_notes")
