"""Erasure: when a victim asked to erase her case, and a legal hold that keeps it.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("erase_requested_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("legal_hold_reason", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("legal_hold_reason")
        batch.drop_column("erase_requested_at")
