"""Flow bundles as published versions: immutable versions, one pointer, drafts per administrator;
and counselor accounts an administrator can deactivate.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("counselors") as batch:
        batch.add_column(
            sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.create_table(
        "flow_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("author", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("files", sa.LargeBinary(), nullable=False),
        sa.Column("pending", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("approved_by", sa.String(length=80), nullable=True),
    )
    op.create_index("ix_flow_versions_digest", "flow_versions", ["digest"])
    op.create_table(
        "flow_pointer",
        sa.Column("name", sa.String(length=16), primary_key=True),
        sa.Column("version", sa.Integer(), sa.ForeignKey("flow_versions.id"), nullable=False),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.Column("changed_by", sa.String(length=80), nullable=False),
    )
    op.create_table(
        "flow_drafts",
        sa.Column("counselor_id", sa.Integer(), sa.ForeignKey("counselors.id"), primary_key=True),
        sa.Column("base_version", sa.Integer(), nullable=True),
        sa.Column("files", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("flow_drafts")
    op.drop_table("flow_pointer")
    op.drop_index("ix_flow_versions_digest", table_name="flow_versions")
    op.drop_table("flow_versions")
    with op.batch_alter_table("counselors") as batch:
        batch.drop_column("active")
