"""console at a million customers: indexes the campaign preview, segments and the AARRR
chain read alone

- outbox: a partial index of the marketing rows by time. A campaign preview counts who the
  frequency cap would hold back now: the customers with ``max_per_window`` marketing rows in
  the last ``window_hours``. This index holds only the marketing rows (with their customer
  and status) by time, so that pass reads the window's rows from the index instead of every
  outbox row of the window from the table.
- customer_tags: the tag index also holds the customer and the expiry, so a segment's tag
  test (``tag:母婴``) reads a tag's customers from the index alone.
- interactions: the customer-and-time index also holds the kind, so the AARRR chain's "first
  message, command or button" of a customer is read from the index alone.

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
    with op.batch_alter_table("customer_tags") as batch_op:
        batch_op.drop_index("ix_customer_tags_tag")
        batch_op.create_index("ix_customer_tags_tag", ["tag_id", "customer_id", "expires_at"])
    with op.batch_alter_table("interactions") as batch_op:
        batch_op.drop_index("ix_interactions_customer_time")
        batch_op.create_index(
            "ix_interactions_customer_time", ["customer_id", "occurred_at", "kind"]
        )
    op.create_index(
        "ix_outbox_marketing_window",
        "outbox",
        ["created_at", "customer_id", "status"],
        postgresql_where=WHERE,
        sqlite_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_marketing_window", table_name="outbox")
    with op.batch_alter_table("interactions") as batch_op:
        batch_op.drop_index("ix_interactions_customer_time")
        batch_op.create_index("ix_interactions_customer_time", ["customer_id", "occurred_at"])
    with op.batch_alter_table("customer_tags") as batch_op:
        batch_op.drop_index("ix_customer_tags_tag")
        batch_op.create_index("ix_customer_tags_tag", ["tag_id"])
