"""How each receipt digest was made: the keyed HMAC of new codes, Argon2id of older ones.

Every row already stored is an Argon2id digest (the scheme before issue 14), so the column's
server default names it; new rows name their scheme explicitly.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("receipts") as batch:
        batch.add_column(
            sa.Column(
                "digest_scheme", sa.String(length=16), nullable=False, server_default="argon2id"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("receipts") as batch:
        batch.drop_column("digest_scheme")
