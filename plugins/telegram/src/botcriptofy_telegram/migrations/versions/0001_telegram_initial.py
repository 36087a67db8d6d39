"""Telegram tables: account links, link codes, approval callbacks and messages, poller lease.

Revision ID: telegram_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "telegram_0001"
down_revision = None
branch_labels = ("telegram",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telegram_approval_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("approval_id", sa.String(length=64), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telegram_approval_messages")),
    )
    op.create_index(op.f("ix_telegram_approval_messages_approval_id"), "telegram_approval_messages", ["approval_id"], unique=False)
    op.create_table(
        "telegram_callbacks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("approval_id", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telegram_callbacks")),
    )
    op.create_table(
        "telegram_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=120), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_offset", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_telegram_leases")),
    )
    op.create_table(
        "telegram_link_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_telegram_link_codes")),
    )
    op.create_table(
        "telegram_links",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("telegram_user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_telegram_links")),
        sa.UniqueConstraint("telegram_user_id", name=op.f("uq_telegram_links_telegram_user_id")),
    )


def downgrade() -> None:
    op.drop_table("telegram_links")
    op.drop_table("telegram_link_codes")
    op.drop_table("telegram_leases")
    op.drop_table("telegram_callbacks")
    op.drop_index(op.f("ix_telegram_approval_messages_approval_id"), table_name="telegram_approval_messages")
    op.drop_table("telegram_approval_messages")
