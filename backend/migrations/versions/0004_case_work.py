"""Case work: follow-ups and outcomes on cases; sealed notes, referrals, replies, takedowns.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _record_columns() -> list[sa.Column]:  # type: ignore[type-arg]  # sa.Column's type argument varies per column
    return [
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("case_id", sa.String(64), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
    ]


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("follows", sa.String(64), nullable=True))
        batch.add_column(sa.Column("outcome", sa.String(32), nullable=True))
        batch.create_index("ix_cases_follows", ["follows"])
    op.create_table("case_notes", *_record_columns())
    op.create_index("ix_case_notes_case_id", "case_notes", ["case_id"])
    op.create_table(
        "case_referrals",
        *_record_columns(),
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column("consent", sa.Boolean(), nullable=False),
        sa.Column("consent_method", sa.String(32), nullable=False),
    )
    op.create_index("ix_case_referrals_case_id", "case_referrals", ["case_id"])
    op.create_table(
        "case_replies",
        *_record_columns(),
        sa.Column("for_victim", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_case_replies_case_id", "case_replies", ["case_id"])
    op.create_table(
        "takedown_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("case_id", sa.String(64), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=False),
        sa.Column("approved_by", sa.Integer(), nullable=True),
        sa.Column("approved_at", sa.DateTime(), nullable=True),
        sa.Column("sent_by", sa.Integer(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("next_check_at", sa.DateTime(), nullable=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("answer", sa.LargeBinary(), nullable=True),
    )
    op.create_index("ix_takedown_requests_case_id", "takedown_requests", ["case_id"])
    op.create_index("ix_takedown_requests_status", "takedown_requests", ["status"])
    op.create_index("ix_takedown_requests_next_check_at", "takedown_requests", ["next_check_at"])
