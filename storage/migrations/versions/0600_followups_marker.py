"""conversations.followups_pending: a marker so the inbound path skips cancelling nothing

NULL (rows from before) means "unknown": the next customer message runs the cancel once and
sets the marker.

Revision ID: 0600
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0600"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("followups_pending", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch_op:
        batch_op.drop_column("followups_pending")
