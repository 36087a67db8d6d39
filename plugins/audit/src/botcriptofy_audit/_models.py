"""The audit tables: entries (append-only, hash-chained), signed checkpoints, and purge permits."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

entries = sa.Table(
    "audit_entries",
    metadata,
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
    sa.Index("ix_audit_entries_tenant_id", "tenant_id", "id"),
    sa.Index("ix_audit_entries_subject", "subject"),
    sa.Index("ix_audit_entries_actor_id", "actor_id"),
)

checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("chain", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("entry_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
    sa.UniqueConstraint("chain", "seq", name="uq_audit_checkpoints_chain_seq"),
)

purge_permits = sa.Table(
    "audit_purge_permits",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("chain", sa.String(64), nullable=False),
    sa.Column("up_to_seq", sa.BigInteger(), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
)

PLATFORM_CHAIN = "platform"
GENESIS = "0" * 64
