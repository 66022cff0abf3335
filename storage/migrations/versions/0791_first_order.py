"""first_order_at on customer_scores: the month cohort of each customer, kept by the recompute

The cohort report groups customers by the month of their first order; computing it from
every order on each report would read all orders, so the nightly RFM recompute (and the
refresh after each order import) stores it with the other per-customer aggregates.

Revision ID: 0791
Revises: 0790
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0791"
down_revision: str | Sequence[str] | None = "0790"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("customer_scores") as batch_op:
        batch_op.add_column(sa.Column("first_order_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE customer_scores SET first_order_at = (SELECT min(orders.ordered_at) FROM orders"
        " WHERE orders.customer_id = customer_scores.customer_id)"
    )
    op.create_index("ix_customer_scores_first_order_at", "customer_scores", ["first_order_at"])


def downgrade() -> None:
    op.drop_index("ix_customer_scores_first_order_at", table_name="customer_scores")
    with op.batch_alter_table("customer_scores") as batch_op:
        batch_op.drop_column("first_order_at")
