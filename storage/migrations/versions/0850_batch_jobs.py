"""batch_jobs: campaign preparation and console imports run as jobs in worker processes;
campaigns.weight for the fair share

One row per unit of batch work, unique by its idempotency key, claimed with a lease by a
worker; a partial unique index keeps jobs of one lock (a campaign) from running at once.
On PostgreSQL a statement trigger sends ``NOTIFY siyu_jobs`` whenever jobs are queued, so
an idle worker wakes at once instead of at its next poll. A campaign's weight (default 1)
sets its part of the delivery workers' fair share among campaigns sending together.

Revision ID: 0850
Revises: 0841
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0850"
down_revision: str | Sequence[str] | None = "0841"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)

NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION siyu_jobs_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('siyu_jobs', '');
  RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("lock_key", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", UTC, nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("lease_until", UTC, nullable=True),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("started_at", UTC, nullable=True),
        sa.Column("finished_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_jobs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_batch_jobs_idempotency_key")),
    )
    op.create_index("ix_batch_jobs_due", "batch_jobs", ["status", "not_before"])
    op.create_index("ix_batch_jobs_kind", "batch_jobs", ["kind", "id"])
    op.create_index(
        "uq_batch_jobs_running_lock",
        "batch_jobs",
        ["lock_key"],
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )
    with op.batch_alter_table("campaigns") as batch_op:
        batch_op.add_column(
            sa.Column("weight", sa.Integer(), server_default=sa.text("1"), nullable=False)
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_FUNCTION)
        op.execute(
            "CREATE TRIGGER batch_jobs_notify AFTER INSERT ON batch_jobs "
            "FOR EACH STATEMENT EXECUTE FUNCTION siyu_jobs_notify()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS batch_jobs_notify ON batch_jobs")
        op.execute("DROP FUNCTION IF EXISTS siyu_jobs_notify()")
    with op.batch_alter_table("campaigns") as batch_op:
        batch_op.drop_column("weight")
    op.drop_index("uq_batch_jobs_running_lock", table_name="batch_jobs")
    op.drop_index("ix_batch_jobs_kind", table_name="batch_jobs")
    op.drop_index("ix_batch_jobs_due", table_name="batch_jobs")
    op.drop_table("batch_jobs")
