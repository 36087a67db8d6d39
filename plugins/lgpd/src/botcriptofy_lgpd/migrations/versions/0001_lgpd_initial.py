"""LGPD tables: the consent ledger (append-only) and data-subject requests.

Revision ID: lgpd_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "lgpd_0001"
down_revision = None
branch_labels = ("lgpd",)
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "lgpd_consents",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("policy_version", sa.String(32), nullable=False),
        sa.Column("policy_hash", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("client_address", sa.String(64), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lgpd_consents_user_purpose", "lgpd_consents", ["user_id", "purpose", "id"])
    op.create_table(
        "lgpd_requests",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("requested_by", sa.String(64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("download_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("file_name", sa.String(100), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("reminded", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("overdue_flagged", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lgpd_requests_user", "lgpd_requests", ["user_id", "received_at"])
    op.create_index("ix_lgpd_requests_open", "lgpd_requests", ["status", "deadline_at"])
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER lgpd_consents_append_only BEFORE UPDATE OF user_id, purpose, granted, policy_version, policy_hash, "
            "channel, recorded_at ON lgpd_consents BEGIN SELECT RAISE(ABORT, 'the consent ledger is append-only'); END"
        )
    else:
        op.execute(
            "CREATE OR REPLACE FUNCTION lgpd_consents_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'the consent ledger is append-only' USING ERRCODE = 'insufficient_privilege'; END $$"
        )
        op.execute(
            "CREATE TRIGGER lgpd_consents_append_only BEFORE UPDATE OF user_id, purpose, granted, policy_version, policy_hash, "
            "channel, recorded_at ON lgpd_consents FOR EACH ROW EXECUTE FUNCTION lgpd_consents_refuse_change()"
        )


def downgrade() -> None:
    op.drop_table("lgpd_requests")
    op.drop_table("lgpd_consents")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS lgpd_consents_refuse_change()")
