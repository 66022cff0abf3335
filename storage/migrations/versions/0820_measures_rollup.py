"""measures_rollup: the console's measures figures over finished days, counted nightly;
campaigns.version for the console's optimistic check

The Measures page reads, for each of its periods, the additive counts of the loyalty
figures, the cohorts and the AARRR chain over the days already finished (counted once by
the nightly job), and adds the delta of the customers active today. Referrals get an index
on their time, so today's newcomers are found without a scan. A campaign's version moves on
every edit and status change, so a manager acting on what they saw is refused if another
changed it meanwhile.

Revision ID: 0820
Revises: 0810
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

UTC = sa.DateTime(timezone=True)

revision: str = "0820"
down_revision: str | Sequence[str] | None = "0810"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "measures_rollup",
        sa.Column("report", sa.String(length=32), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("start", sa.String(length=10), nullable=False),
        sa.Column("end", sa.String(length=10), nullable=False),
        sa.Column("cutoff_at", UTC, nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("computed_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint(
            "report", "zone", "start", "end", "cutoff_at", name=op.f("pk_measures_rollup")
        ),
    )
    op.create_index("ix_referrals_created_at", "referrals", ["created_at"])
    with op.batch_alter_table("campaigns") as batch_op:
        batch_op.add_column(
            sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("campaigns") as batch_op:
        batch_op.drop_column("version")
    op.drop_index("ix_referrals_created_at", table_name="referrals")
    op.drop_table("measures_rollup")
