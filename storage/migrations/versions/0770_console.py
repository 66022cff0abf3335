"""console: staff members' chosen language; saved segments' member counts by day; daily
rollups of the dashboard; indexes for its date ranges and the customer timeline

Revision ID: 0770
Revises: 0760
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0770"
down_revision: str | Sequence[str] | None = "0760"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "segment_counts",
        sa.Column(
            "segment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_counts_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("segment_id", "day", name=op.f("pk_segment_counts")),
    )

    op.create_table(
        "console_daily",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "metric", "key", name=op.f("pk_console_daily")),
    )
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    op.create_index(
        "ix_outbox_key_prefix",
        "outbox",
        ["idempotency_key"],
        postgresql_ops={"idempotency_key": "text_pattern_ops"},
    )


INDEXES = (
    ("ix_interactions_occurred_at", "interactions", ["occurred_at"]),
    ("ix_outbox_created_at", "outbox", ["created_at"]),
    ("ix_outbox_sent_at", "outbox", ["sent_at"]),
    ("ix_memberships_joined_at", "memberships", ["joined_at"]),
    ("ix_memberships_left_at", "memberships", ["left_at"]),
    ("ix_coupon_codes_redeemed_at", "coupon_codes", ["redeemed_at"]),
    ("ix_campaign_targets_customer", "campaign_targets", ["customer_id"]),
)


def downgrade() -> None:
    op.drop_index("ix_outbox_key_prefix", table_name="outbox")
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
    op.drop_table("console_daily")
    op.drop_table("segment_counts")
