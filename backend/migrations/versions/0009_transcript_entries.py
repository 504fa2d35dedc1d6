"""Live-chat transcripts kept in SQL as the chat runs (Redis keeps the live buffer only).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transcript_entries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("entry_id", sa.String(length=40), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.Column("event", sa.String(length=400), nullable=True),
        sa.UniqueConstraint("case_id", "entry_id"),
    )
    op.create_index("ix_transcript_entries_case_id", "transcript_entries", ["case_id"])


def downgrade() -> None:
    op.drop_index("ix_transcript_entries_case_id", table_name="transcript_entries")
    op.drop_table("transcript_entries")
