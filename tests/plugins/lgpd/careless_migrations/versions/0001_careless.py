"""A test plugin's table of e-mail addresses.

Revision ID: careless_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "careless_0001"
down_revision = None
branch_labels = ("careless",)
depends_on = None


def upgrade() -> None:
    op.create_table("careless_contacts", sa.Column("id", sa.Integer, primary_key=True), sa.Column("email", sa.String(320)))


def downgrade() -> None:
    op.drop_table("careless_contacts")
