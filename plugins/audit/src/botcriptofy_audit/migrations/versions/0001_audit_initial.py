"""Audit tables: hash-chained entries, signed checkpoints and purge permits, refusing UPDATE, DELETE and TRUNCATE.

Revision ID: audit_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "audit_0001"
down_revision = None
branch_labels = ("audit",)
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_entries' AND EXISTS (
        SELECT 1 FROM audit_purge_permits p WHERE p.chain = OLD.chain AND OLD.seq <= p.up_to_seq
    ) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit trail is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$
"""


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("chain", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("occurred_at", sa.String(32), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=True),
        sa.Column("actor_kind", sa.String(16), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("client_address", sa.String(64), nullable=True),
        sa.Column("event_id", sa.String(64), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("chain", "seq", name="uq_audit_entries_chain_seq"),
        sa.UniqueConstraint("event_id", name="uq_audit_entries_event_id"),
    )
    op.create_index("ix_audit_entries_tenant_id", "audit_entries", ["tenant_id", "id"])
    op.create_index("ix_audit_entries_subject", "audit_entries", ["subject"])
    op.create_index("ix_audit_entries_actor_id", "audit_entries", ["actor_id"])
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("chain", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.UniqueConstraint("chain", "seq", name="uq_audit_checkpoints_chain_seq"),
    )
    op.create_table(
        "audit_purge_permits",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("chain", sa.String(64), nullable=False),
        sa.Column("up_to_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for table in ("audit_entries", "audit_checkpoints"):
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
            )
        from botcriptofy_audit._grants import secure_tables

        secure_tables(op.get_bind())
    else:
        for table in ("audit_entries", "audit_checkpoints"):
            op.execute(
                f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: UPDATE on {table} is refused'); END"
            )
        op.execute(
            "CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries WHEN NOT EXISTS ("
            "SELECT 1 FROM audit_purge_permits p WHERE p.chain = OLD.chain AND OLD.seq <= p.up_to_seq) "
            "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: DELETE on audit_entries is refused'); END"
        )
        op.execute(
            "CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints "
            "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: DELETE on audit_checkpoints is refused'); END"
        )


def downgrade() -> None:
    bind = op.get_bind()
    for table in ("audit_purge_permits", "audit_checkpoints", "audit_entries"):
        op.drop_table(table)
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_refuse_change()")
