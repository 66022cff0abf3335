"""measures: invite codes, referrals and their rewards, survey responses; time indexes

Revision ID: 0780
Revises: 0770
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0780"
down_revision: str | Sequence[str] | None = "0770"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def _customer_fk(column: str, table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["customers.id"], name=op.f(f"fk_{table}_{column}_customers")
    )


def upgrade() -> None:
    op.create_table(
        "invite_codes",
        sa.Column("customer_id", BIG, nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        _customer_fk("customer_id", "invite_codes"),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_invite_codes")),
        sa.UniqueConstraint("code", name=op.f("uq_invite_codes_code")),
    )
    op.create_table(
        "referrals",
        sa.Column("id", BIG, nullable=False),
        sa.Column("referrer_id", BIG, nullable=False),
        sa.Column("referred_id", BIG, nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("first_order_at", UTC, nullable=True),
        _customer_fk("referrer_id", "referrals"),
        _customer_fk("referred_id", "referrals"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrals")),
        sa.UniqueConstraint("referred_id", name=op.f("uq_referrals_referred_id")),
    )
    op.create_index("ix_referrals_referrer", "referrals", ["referrer_id", "created_at"])
    op.create_table(
        "referral_rewards",
        sa.Column("id", BIG, nullable=False),
        sa.Column("referral_id", BIG, nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("beneficiary", sa.String(length=16), nullable=False),
        sa.Column("customer_id", BIG, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("coupon_code", sa.String(length=32), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referrals.id"],
            name=op.f("fk_referral_rewards_referral_id_referrals"),
        ),
        _customer_fk("customer_id", "referral_rewards"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_rewards")),
        sa.UniqueConstraint("referral_id", "rule", "beneficiary", name="uq_referral_rewards_once"),
    )
    op.create_index(
        "ix_referral_rewards_customer", "referral_rewards", ["customer_id", "created_at"]
    )
    op.create_table(
        "survey_responses",
        sa.Column("id", BIG, nullable=False),
        sa.Column("survey", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("customer_id", BIG, nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("staff", sa.String(length=128), nullable=True),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("answered_at", UTC, nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        _customer_fk("customer_id", "survey_responses"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_responses")),
    )
    op.create_index("ix_survey_responses_survey", "survey_responses", ["survey", "answered_at"])
    op.create_index("ix_survey_responses_customer", "survey_responses", ["customer_id"])
    op.create_index("ix_orders_time", "orders", ["ordered_at", "customer_id"])
    op.create_index("ix_customers_created", "customers", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_customers_created", table_name="customers")
    op.drop_index("ix_orders_time", table_name="orders")
    op.drop_table("survey_responses")
    op.drop_table("referral_rewards")
    op.drop_table("referrals")
    op.drop_table("invite_codes")
