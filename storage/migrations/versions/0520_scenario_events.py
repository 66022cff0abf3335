"""scenario_events: tracked button presses on scenario pushes (the scenario funnel)

Revision ID: 0520
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0520"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "scenario_events",
        sa.Column("id", BIG, nullable=False),
        sa.Column("scenario_id", BIG, nullable=False),
        sa.Column("customer_id", BIG, nullable=False),
        sa.Column("outbox_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scenario_events")),
        sa.UniqueConstraint(
            "outbox_key", "kind", "detail", name=op.f("uq_scenario_events_outbox_key")
        ),
    )
    op.create_index(
        op.f("ix_scenario_events_scenario_id"), "scenario_events", ["scenario_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_scenario_events_scenario_id"), table_name="scenario_events")
    op.drop_table("scenario_events")
