"""staff_users.session_version: inbox sessions the server can revoke

A signed session cookie carries the staff member's session version; every request compares
it with this column. Logging out (or deactivating the account) bumps the version, so a
copied cookie stops working at once instead of living until it expires.

Revision ID: 0710
Revises: 0700
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0710"
down_revision: str | Sequence[str] | None = "0700"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "staff_users",
        sa.Column("session_version", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("staff_users") as batch:
        batch.drop_column("session_version")
