"""Case status times and claims, the audit log, receipts and per-deployment secrets.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added nullable, filled from received_at, then made NOT NULL: SQLite cannot add a NOT NULL
    # column with a non-constant default, and batch mode copies the table to alter it.
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("status_changed_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.Integer(), nullable=True))
    op.execute("UPDATE cases SET status_changed_at = received_at")
    with op.batch_alter_table("cases") as batch:
        batch.alter_column("status_changed_at", existing_type=sa.DateTime(), nullable=False)
        batch.create_index("ix_cases_status_changed_at", ["status_changed_at"])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(80), nullable=False),
        sa.Column("detail", sa.String(200), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_table(
        "receipts",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("case_id", sa.String(64), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("issued_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_receipts_case_id", "receipts", ["case_id"])
    op.create_table(
        "deployment_secrets",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
    )
