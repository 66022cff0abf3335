"""the dashboard's whole-table counts read from small indexes alone

The dashboard's first visit counts customers per channel, active members per group, live
tags per tag and customers per lifecycle stage, tier and RFM group: before, each read a
whole table of up to a million rows. With these indexes each is an index-only scan of a
few megabytes (once vacuumed, as autovacuum keeps them):

- identities: by channel;
- memberships: the active ones by group (partial);
- customer_tags: by tag with the expiry;
- customer_scores: the lifecycle index also holds the tier and RFM group (its leading
  column is unchanged, so the segments' lifecycle tests use it as before).

Revision ID: 0841
Revises: 0840
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0841"
down_revision: str | Sequence[str] | None = "0840"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = sa.text("active")


def upgrade() -> None:
    op.create_index("ix_identities_channel", "identities", ["channel"])
    op.create_index(
        "ix_memberships_active_group",
        "memberships",
        ["group_id"],
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )
    op.create_index("ix_customer_tags_tag_expiry", "customer_tags", ["tag_id", "expires_at"])
    with op.batch_alter_table("customer_scores") as batch_op:
        batch_op.drop_index("ix_customer_scores_lifecycle")
        batch_op.create_index("ix_customer_scores_lifecycle", ["lifecycle", "tier", "rfm_group"])


def downgrade() -> None:
    with op.batch_alter_table("customer_scores") as batch_op:
        batch_op.drop_index("ix_customer_scores_lifecycle")
        batch_op.create_index("ix_customer_scores_lifecycle", ["lifecycle"])
    op.drop_index("ix_customer_tags_tag_expiry", table_name="customer_tags")
    op.drop_index("ix_memberships_active_group", table_name="memberships")
    op.drop_index("ix_identities_channel", table_name="identities")
