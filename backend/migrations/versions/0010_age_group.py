"""A case's coarse age group (minor, adult, not_said), in clear for the statistics (issue 16).

Cases stored before it carry no age group in their routing header: they are "not_said".

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(
            sa.Column("age_group", sa.String(length=16), nullable=False, server_default="not_said")
        )


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("age_group")
