"""flows and staff issue real coupons (drop offer_grants); tracked links

The placeholder ``offer_grants`` rows are not migrated: they had free titles and no coupon
definition (no value, no minimum spend), so they cannot become coupon codes. A breakpoint
that still holds such an offer finds no code for it and is issued a real coupon when the
offer is next repeated (``renewed``); staff re-issue theirs from the inbox if needed.

Revision ID: 0510
Revises: 0500, 0400 (offer_grants is created in 0400: a parent, not only a dependency, so the
history has one head)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0510"
down_revision: str | Sequence[str] | None = ("0500", "0400")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("offer_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offer_grants_customer_id"))
    op.drop_table("offer_grants")

    op.create_table(
        "tracked_links",
        sa.Column("id", _ID, nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("outbox_key", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("campaign_id", _ID, nullable=True),
        sa.Column("variant", sa.String(length=32), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("first_clicked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_clicked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracked_links")),
        sa.UniqueConstraint("token", name=op.f("uq_tracked_links_token")),
        sa.UniqueConstraint("outbox_key", "seq", name=op.f("uq_tracked_links_outbox_key")),
    )
    with op.batch_alter_table("tracked_links", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tracked_links_campaign_id"), ["campaign_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("tracked_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tracked_links_campaign_id"))
    op.drop_table("tracked_links")

    op.create_table(
        "offer_grants",
        sa.Column("id", _ID, nullable=False),
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("conversation_id", _ID, nullable=True),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_offer_grants_conversation_id_conversations"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_offer_grants_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offer_grants")),
        sa.UniqueConstraint("code", name=op.f("uq_offer_grants_code")),
    )
    with op.batch_alter_table("offer_grants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_offer_grants_customer_id"), ["customer_id"], unique=False
        )
