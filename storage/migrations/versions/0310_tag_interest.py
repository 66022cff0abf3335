"""customers: interest scores per tag; an index on coupon_codes(customer_id)

Revision ID: 0310
Revises: 0300
Depends on: 0500 (coupon_codes is created there)

``tag_interest`` holds the decaying sum of rule weights per customer and tag
(storage/tag_scores.py). ``ix_coupon_codes_customer`` serves the profile's "coupons of this
customer" lookup: the table's own ``ix_coupon_codes_owner`` starts with definition_id.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0310"
down_revision: str | Sequence[str] | None = "0300"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "0500"

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tag_interest",
        sa.Column("customer_id", BigId, nullable=False),
        sa.Column("tag_id", BigId, nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("decay_rate", sa.Float(), nullable=False),
        sa.Column("decay_key", sa.Float(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("first_hit_at", UTC, nullable=False),
        sa.Column("last_hit_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_tag_interest_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name=op.f("fk_tag_interest_tag_id_tags")),
        sa.PrimaryKeyConstraint("customer_id", "tag_id", name=op.f("pk_tag_interest")),
    )
    op.create_index("ix_tag_interest_tag", "tag_interest", ["tag_id"])
    op.create_index("ix_coupon_codes_customer", "coupon_codes", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_coupon_codes_customer", table_name="coupon_codes")
    op.drop_index("ix_tag_interest_tag", table_name="tag_interest")
    op.drop_table("tag_interest")
