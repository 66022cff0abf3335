"""login_failures: failed inbox logins, counted to throttle password guessing

One row per failed login (name and client IP); bot/conversations/staff.py refuses further attempts for a
name or IP with too many rows inside [handoff] login_window_minutes. A table, not process
memory, so every Siyu process behind the load balancer shares the count.

Revision ID: 0610
Revises: 0600
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0610"
down_revision: str | Sequence[str] | None = "0600"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("id", BigId, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    op.create_index("ix_login_failures_username", "login_failures", ["username", "created_at"])
    op.create_index("ix_login_failures_client_ip", "login_failures", ["client_ip", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_login_failures_client_ip", table_name="login_failures")
    op.drop_index("ix_login_failures_username", table_name="login_failures")
    op.drop_table("login_failures")
