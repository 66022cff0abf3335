"""outbox: a partial index of the marketing rows by time, for the frequency cap's window

A campaign preview counts who the frequency cap would hold back now: the customers with
``max_per_window`` marketing rows in the last ``window_hours``. This index holds only the
marketing rows (with their customer and status) by time, so that pass reads the window's
rows from the index instead of every outbox row of the window from the table.

Revision ID: 0840
Revises: 0820
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0840"
down_revision: str | Sequence[str] | None = "0820"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = sa.text(
    "purpose IN ('followup', 'campaign', 'scenario', 'marketing', 'survey') "
    "AND customer_id IS NOT NULL"
)


def upgrade() -> None:
    op.create_index(
        "ix_outbox_marketing_window",
        "outbox",
        ["created_at", "customer_id", "status"],
        postgresql_where=WHERE,
        sqlite_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_marketing_window", table_name="outbox")
