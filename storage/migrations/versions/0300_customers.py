"""customers: orders, scores, customer events, tag rules, saved segments

Revision ID: 0300
Revises: 0001

Also adds two indexes to a core table: ``ix_customers_city`` (segment condition ``city:``)
and ``ix_customers_phone`` (orders matched by phone).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0300"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", BigId, nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", BigId, nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("ordered_at", UTC, nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_orders_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("order_id", name=op.f("uq_orders_order_id")),
    )
    op.create_index("ix_orders_customer_time", "orders", ["customer_id", "ordered_at"])

    op.create_table(
        "customer_scores",
        sa.Column("customer_id", BigId, nullable=False),
        sa.Column("last_order_at", UTC, nullable=False),
        sa.Column("orders_total", sa.Integer(), nullable=False),
        sa.Column("spend_total_cents", sa.BigInteger(), nullable=False),
        sa.Column("frequency", sa.Integer(), nullable=False),
        sa.Column("monetary_cents", sa.BigInteger(), nullable=False),
        sa.Column("spend_12m_cents", sa.BigInteger(), nullable=False),
        sa.Column("r_score", sa.Integer(), nullable=True),
        sa.Column("f_score", sa.Integer(), nullable=True),
        sa.Column("m_score", sa.Integer(), nullable=True),
        sa.Column("rfm_group", sa.String(length=32), nullable=True),
        sa.Column("lifecycle", sa.String(length=16), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=True),
        sa.Column("computed_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_customer_scores_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customer_scores")),
    )
    for column in ("rfm_group", "lifecycle", "tier", "last_order_at"):
        op.create_index(f"ix_customer_scores_{column}", "customer_scores", [column])
    op.create_index("ix_customer_scores_spend_12m", "customer_scores", ["spend_12m_cents"])

    op.create_table(
        "customer_events",
        sa.Column("id", BigId, nullable=False),
        sa.Column("customer_id", BigId, nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("old_value", sa.String(length=32), nullable=True),
        sa.Column("new_value", sa.String(length=32), nullable=True),
        sa.Column("occurred_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_customer_events_customer_id_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_events")),
    )
    op.create_index("ix_customer_events_customer", "customer_events", ["customer_id", "id"])

    op.create_table(
        "tag_rules",
        sa.Column("id", BigId, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("ttl_days", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tag_rules")),
    )

    op.create_table(
        "segments",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("expression", sa.String(length=2000), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("name", name=op.f("uq_segments_name")),
    )
    op.create_index("ix_customers_city", "customers", ["city"])
    op.create_index("ix_customers_phone", "customers", ["phone"])


def downgrade() -> None:
    op.drop_index("ix_customers_phone", table_name="customers")
    op.drop_index("ix_customers_city", table_name="customers")
    op.drop_table("segments")
    op.drop_table("tag_rules")
    op.drop_index("ix_customer_events_customer", table_name="customer_events")
    op.drop_table("customer_events")
    for name in ("rfm_group", "lifecycle", "tier", "last_order_at", "spend_12m"):
        op.drop_index(f"ix_customer_scores_{name}", table_name="customer_scores")
    op.drop_table("customer_scores")
    op.drop_index("ix_orders_customer_time", table_name="orders")
    op.drop_table("orders")
