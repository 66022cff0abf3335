"""staff locale and satisfaction ratings: what staff read, and what customers thought

``staff_users.locale`` chooses the language of the staff inbox and of the texts sent to a
staff member (zh-CN by default). ``handoff_tickets.rating`` / ``rated_at`` hold the
customer's one-tap satisfaction rating (1–5) after a conversation was resolved, shown per
staff member on the manager page.

Revision ID: 0750
Revises: 0740
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0750"
down_revision: str | Sequence[str] | None = "0740"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("staff_users") as batch:
        batch.add_column(
            sa.Column("locale", sa.String(length=8), nullable=False, server_default="zh-CN")
        )
    with op.batch_alter_table("handoff_tickets") as batch:
        batch.add_column(sa.Column("rating", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rated_at", UTC, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("handoff_tickets") as batch:
        batch.drop_column("rated_at")
        batch.drop_column("rating")
    with op.batch_alter_table("staff_users") as batch:
        batch.drop_column("locale")
