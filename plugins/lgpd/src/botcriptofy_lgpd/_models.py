"""The lgpd tables: the append-only consent ledger and data-subject requests."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

consents = sa.Table(
    "lgpd_consents",
    metadata,
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
    sa.Index("ix_lgpd_consents_user_purpose", "user_id", "purpose", "id"),
)

requests = sa.Table(
    "lgpd_requests",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=True),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # export | erasure | correction | revocation
    sa.Column("status", sa.String(16), nullable=False),  # received | processing | completed | failed
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("requested_by", sa.String(64), nullable=True),
    sa.Column("detail", sa.JSON(), nullable=True),
    sa.Column("report", sa.JSON(), nullable=True),
    sa.Column("steps", sa.JSON(), nullable=False),
    sa.Column("download_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("file_name", sa.String(100), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, default=0),
    sa.Column("reminded", sa.Boolean(), nullable=False, default=False),
    sa.Column("overdue_flagged", sa.Boolean(), nullable=False, default=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_lgpd_requests_user", "user_id", "received_at"),
    sa.Index("ix_lgpd_requests_open", "status", "deadline_at"),
)
